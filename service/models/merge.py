"""An adapter folded into its base model's weights: an ordinary Hugging Face folder (weights, config, the
base's tokenizer, processor and chat template) that transformers or vLLM load without peft.

The merge runs in float32 (adding a low-rank product to bf16 weights rounds it away in part), then the
weights are saved in the base's own precision unless another is asked for. Heavy imports stay inside."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

DTYPES = ("auto", "bfloat16", "float16", "float32")
# The base's own weights, replaced by the merged ones; every other file of its folder is copied.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# One merge at a time: each holds the base in float32 in memory.
_one_at_a_time = threading.Lock()


def base_dtype(base_path: Path) -> str:
    """The precision the base model's weights are stored in (its config), float32 when it says none."""
    config = json.loads((base_path / "config.json").read_text())
    dtype = config.get("torch_dtype") or config.get("dtype") or "float32"
    return dtype if dtype in DTYPES else "float32"


def merge_adapter(
    base_path: Path, adapter: Path, out: Path, dtype: str = "auto", vision: bool = False
) -> Path:
    """Save base + `adapter` merged into `out` in `dtype` ("auto": the base's); returns `out`."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    target = base_dtype(base_path) if dtype == "auto" else dtype
    loader = AutoModelForImageTextToText if vision else AutoModelForCausalLM
    with _one_at_a_time:
        model = loader.from_pretrained(base_path, dtype=torch.float32)
        merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        merged.to(getattr(torch, target)).save_pretrained(out, safe_serialization=True)
        del model, merged
    written = {p.name for p in out.iterdir()}
    for path in sorted(base_path.iterdir()):
        if (
            path.is_file()
            and path.name not in written
            and path.name not in _WEIGHT_INDEXES
            and not path.name.endswith(_WEIGHT_SUFFIXES)
        ):
            shutil.copy2(path, out / path.name)
    return out
