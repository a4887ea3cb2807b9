"""Tokenize a training file with the base model's tokenizer before a job is accepted, so that an example
longer than max_seq_length is a 400 naming its line instead of a silent truncation later."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from service.models.base_models import modalities
from trainers.data_format import DatasetError, parse_jsonl
from trainers.tokenization import tokenize_all


@dataclass(frozen=True)
class DatasetStats:
    n_examples: int
    n_tokens: int
    n_trained_tokens: int


@lru_cache(maxsize=8)
def load_tokenizer(path: str):  # a Hugging Face tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(Path(path))


def check_dataset(base_path: Path, data: bytes, max_seq_length: int) -> DatasetStats:
    """Parse and tokenize; raises trainers.data_format.DatasetError naming the first bad line."""
    examples = parse_jsonl(data)
    with_images = next((e for e in examples if e.images), None)
    if with_images is not None:
        if "image" not in modalities(base_path):
            raise DatasetError(
                with_images.line,
                f"the example has images, but the base model {base_path.name} takes text only: choose a "
                "vision-language base model (`modalities` in GET /v1/models)",
            )
        raise DatasetError(
            with_images.line, "fine-tuning on images is not available yet: the vision recipe is in progress"
        )
    tokenized = tokenize_all(load_tokenizer(str(base_path)), examples, max_seq_length)
    return DatasetStats(
        len(tokenized), sum(len(t.input_ids) for t in tokenized), sum(t.n_trained for t in tokenized)
    )


@lru_cache(maxsize=8)
def module_names(path: str) -> frozenset[str]:
    """Leaf module names of a model (`q_proj`, ...), from its config on the meta device: no weights load."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(Path(path)))
    return frozenset(name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name)


def unknown_target_modules(base_path: Path, targets: list[str]) -> list[str]:
    """LoRA targets that name no module of the base model (peft's "all-linear" is always fine)."""
    names = module_names(str(base_path))
    return [t for t in targets if t != "all-linear" and t not in names]
