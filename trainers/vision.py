"""Vision examples -> the model's inputs: token ids (image tokens expanded by the model's own processor),
labels with loss only on what the assistant says, and the images' pixel values.

The processor renders the conversation with its chat template (an image part becomes the image token) and
expands each image token into the image's feature tokens, so positions cannot be found in the text as for
text examples (`trainers.tokenization`). Instead, the tokens of an assistant turn are those the turn adds:
the conversation up to the turn, rendered with the generation prompt and processed, must be a prefix of
the conversation including it (a template for which it is not is refused, naming the line).

Whatever else the processor returns goes to the model as the processor made it, for any architecture:
LLaVA's `pixel_values` (images x channels x height x width), Qwen2-VL's patches and `image_grid_thw`,
Idefics3/SmolVLM's crops and `pixel_attention_mask`, LLaVA-NeXT's `image_sizes`, and per-token inputs such
as `mm_token_type_ids`. `collate_image_inputs` joins a batch's.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field

from service.platform.images import decode_data_url
from trainers.data_format import IMAGE, DatasetError, Example
from trainers.tokenization import IGNORE_INDEX

ImageLoader = Callable[[str], bytes]  # an image_url.url (data URL or file id) -> the image's bytes


@dataclass(frozen=True)
class VisionExample:
    line: int
    input_ids: list[int]
    labels: list[int]
    # The processor's other inputs with a value per token (`mm_token_type_ids`, `token_type_ids`).
    token_inputs: dict[str, list[int]] = field(default_factory=dict)
    # Makes the processor's tensors of the example's images (`pixel_values`, `image_grid_thw`, ...; {} with
    # none) when a batch needs them. They are not kept: at a real model's resolution they are megabytes a
    # picture (a 1024x768 JPEG of 425 KB through SmolVLM's processor: 13 crops of 512 px and their mask,
    # 68 MB), against the picture's own bytes, which the example holds anyway. The processor is
    # deterministic, so they match the image tokens counted here.
    image_inputs: Callable[[], dict] = field(default=dict, repr=False, compare=False)

    @property
    def n_trained(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


def data_url_loader(files: dict[str, bytes] | None = None) -> ImageLoader:
    """Images from data URLs, and from file ids found in `files` (their bytes, fetched beforehand)."""

    def load(url: str) -> bytes:
        if url.startswith("data:"):
            return decode_data_url(url)
        if files is not None and url in files:
            return files[url]
        raise KeyError(f"image {url[:40]} is not available to this run")

    return load


def chat_messages(example: Example) -> list[dict]:
    """The example's messages in the processor's chat format: content lists with image and text parts."""
    out = []
    for m in example.messages:
        if m.parts:
            content = [_part(kind, value) for kind, value in m.parts]
        else:
            content = [{"type": "text", "text": m.content}]
        out.append({"role": m.role, "content": content})
    return out


def _part(kind: str, value: str) -> dict:
    return {"type": "image"} if kind == IMAGE else {"type": "text", "text": value}


def tokenize_vision_example(processor, example: Example, load: ImageLoader) -> VisionExample:
    """Token ids, labels (assistant turns with weight 1) and the way to the image inputs of one example."""
    from PIL import Image

    messages = chat_messages(example)

    def encode(upto: int, generation_prompt: bool) -> tuple[list[int], dict]:
        head = messages[:upto]
        text = processor.apply_chat_template(head, tokenize=False, add_generation_prompt=generation_prompt)
        n_images = sum(1 for m in head for p in m["content"] if p["type"] == "image")
        images = [Image.open(io.BytesIO(load(url))).convert("RGB") for url in example.images[:n_images]]
        batch = processor(text=[text], images=images or None, add_special_tokens=False, return_tensors="pt")
        return batch["input_ids"][0].tolist(), batch

    ids, inputs = encode(len(messages), generation_prompt=False)
    labels = [IGNORE_INDEX] * len(ids)
    for i, m in enumerate(example.messages):
        if m.role != "assistant" or m.weight == 0:
            continue
        before, _ = encode(i, generation_prompt=True)
        upto, _ = encode(i + 1, generation_prompt=False)
        if upto[: len(before)] != before or ids[: len(upto)] != upto:
            raise DatasetError(example.line, "the chat template renders this conversation inconsistently")
        labels[len(before) : len(upto)] = upto[len(before) :]
    token_inputs = _split_inputs(inputs, len(ids))[1]
    if not example.images:
        return VisionExample(example.line, ids, labels, token_inputs)

    def image_inputs() -> dict:
        return _split_inputs(encode(len(messages), generation_prompt=False)[1], len(ids))[0]

    return VisionExample(example.line, ids, labels, token_inputs, image_inputs)


def _split_inputs(inputs, n_tokens: int) -> tuple[dict, dict[str, list[int]]]:
    """The processor's outputs besides the token ids and their mask: integer rows with a value per token
    (padded like the ids in a batch), and the rest, which describe the images."""
    image_inputs, token_inputs = {}, {}
    for key, value in inputs.items():
        if key in ("input_ids", "attention_mask"):
            continue
        per_token = value.ndim == 2 and tuple(value.shape) == (1, n_tokens) and not value.is_floating_point()
        if per_token:
            token_inputs[key] = value[0].tolist()
        else:
            image_inputs[key] = value
    return image_inputs, token_inputs


def collate_image_inputs(examples: list[dict], device: object, float_dtype: object) -> dict:
    """A batch's image inputs: each key's tensors in example order (the order of the image tokens), joined
    along their first dimension (images, or patches), every other dimension zero-padded to the largest:
    Idefics3's crops per image and LLaVA-NeXT's patches vary, and their models drop all-zero images or
    read the real counts from `image_sizes`. Floating tensors (pixels) take the model's dtype."""
    import torch
    import torch.nn.functional as F

    out = {}
    for key in dict.fromkeys(k for e in examples for k in e):
        tensors = [e[key] for e in examples if key in e]
        shape = [max(t.shape[d] for t in tensors) for d in range(tensors[0].ndim)]
        padded = []
        for t in tensors:
            pads = [n for d in reversed(range(1, t.ndim)) for n in (0, shape[d] - t.shape[d])]
            padded.append(F.pad(t, pads) if any(pads) else t)
        joined = torch.cat(padded)
        out[key] = joined.to(device=device, dtype=float_dtype if joined.is_floating_point() else None)
    return out


def tokenize_all_vision(
    processor, examples: list[Example], load: ImageLoader, max_seq_length: int
) -> list[VisionExample]:
    """Every example; one longer than max_seq_length (its images' tokens included) is an error naming it."""
    out = []
    for ex in examples:
        tok = tokenize_vision_example(processor, ex, load)
        if len(tok.input_ids) > max_seq_length:
            raise DatasetError(
                ex.line,
                f"the example has {len(tok.input_ids)} tokens (its images included), more than "
                f"max_seq_length={max_seq_length}; shorten it or raise max_seq_length",
            )
        out.append(tok)
    return out
