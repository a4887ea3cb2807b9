"""Tokenize a training file with the base model's tokenizer before a job is accepted, so that an example
longer than max_seq_length is a 400 naming its line instead of a silent truncation later."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from service.models.base_models import modalities
from trainers.data_format import DatasetError, Example, parse_jsonl
from trainers.tokenization import tokenize_all
from trainers.vision import data_url_loader, tokenize_all_vision


@dataclass(frozen=True)
class DatasetStats:
    n_examples: int
    n_tokens: int
    n_trained_tokens: int
    image_files: frozenset[str] = field(default_factory=frozenset)  # the images the data names by id or URL


@lru_cache(maxsize=8)
def load_tokenizer(path: str):  # a Hugging Face tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(Path(path))


@lru_cache(maxsize=4)
def load_processor(path: str):  # a Hugging Face processor (tokenizer + image processor)
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(Path(path))


def check_dataset(
    base_path: Path,
    data: bytes,
    max_seq_length: int,
    read_image: Callable[[str], bytes] | None = None,
    image_domains: Collection[str] = (),
    method: str = "supervised",
) -> DatasetStats:
    """Parse and tokenize (with the model's processor for a vision-language model, images included);
    raises trainers.data_format.DatasetError naming the first bad line. `read_image` gives the bytes of
    an image named by file id or by URL (on `image_domains`), raising KeyError for one that cannot be
    used. Every example must suit the job's `method` (preference pairs for DPO, and only for DPO)."""
    examples = parse_jsonl(data, image_domains=image_domains)
    check_method(examples, method)
    with_images = next((e for e in examples if e.images), None)
    vision = "image" in modalities(base_path)
    if vision:
        check_vision_supports(examples, method)
    if not vision:
        if with_images is not None:
            raise DatasetError(
                with_images.line,
                f"the example has images, but the base model {base_path.name} takes text only: choose a "
                "vision-language base model (`modalities` in GET /v1/models)",
            )
        tokenized = tokenize_all(load_tokenizer(str(base_path)), examples, max_seq_length)
        return DatasetStats(
            len(tokenized), sum(len(t.input_ids) for t in tokenized), sum(t.n_trained for t in tokenized)
        )
    files: dict[str, bytes] = {}
    for example in examples:
        for url in example.images:
            if url.startswith("data:") or url in files:
                continue
            if read_image is None:
                raise DatasetError(example.line, f"image {url[:80]}: only data URLs can be used here")
            try:
                files[url] = read_image(url)
            except KeyError as exc:
                raise DatasetError(example.line, str(exc.args[0])) from None
    tokenized = tokenize_all_vision(
        load_processor(str(base_path)), examples, data_url_loader(files), max_seq_length
    )
    return DatasetStats(
        len(tokenized),
        sum(len(t.input_ids) for t in tokenized),
        sum(t.n_trained for t in tokenized),
        frozenset(files),
    )


def check_method(examples: list[Example], method: str) -> None:
    """DPO trains on preference pairs and supervised fine-tuning on the rest; a file of the other kind is
    an error at its first line."""
    for example in examples:
        if method == "dpo" and not example.is_preference:
            raise DatasetError(
                example.line,
                'a DPO job needs preference examples: {"input": {"messages": [...]}, "preferred_output": '
                '[...], "non_preferred_output": [...]}',
            )
        if method != "dpo" and example.is_preference:
            raise DatasetError(
                example.line,
                "a preference example (input, preferred_output, non_preferred_output) needs method "
                'type "dpo"',
            )


def check_vision_supports(examples: list[Example], method: str) -> None:
    """What the vision-language recipe does not do yet: DPO, and tools."""
    if method == "dpo":
        raise DatasetError(None, "DPO is not available for vision-language base models yet")
    for example in examples:
        if example.tools or any(m.tool_calls or m.role == "tool" for m in example.messages):
            raise DatasetError(
                example.line, "tool calling is not available for vision-language base models yet"
            )


@lru_cache(maxsize=8)
def module_names(path: str) -> frozenset[str]:
    """Leaf module names of a model (`q_proj`, ...) that LoRA may target, from its config on the meta device:
    no weights load. A vision-language model's are its language model's: LoRA goes there only
    (`trainers.lora_sft.language_model_targets`), never on the vision tower's `fc1`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    vision = "image" in modalities(Path(path))
    auto = AutoModelForImageTextToText if vision else AutoModelForCausalLM
    with torch.device("meta"):
        model = auto.from_config(AutoConfig.from_pretrained(Path(path)))
    scope = model.get_decoder() if vision else model
    return frozenset(name.rsplit(".", 1)[-1] for name, _ in scope.named_modules() if name)


def unknown_target_modules(base_path: Path, targets: list[str]) -> list[str]:
    """LoRA targets that name no module of the base model (peft's "all-linear" is always fine)."""
    names = module_names(str(base_path))
    return [t for t in targets if t != "all-linear" and t not in names]
