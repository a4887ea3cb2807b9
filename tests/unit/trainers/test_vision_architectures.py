"""The vision recipe trains the VLM families users bring, not only the test VLM's LLaVA: Idefics3/SmolVLM
(the language model is `text_model`; each image is several crops, as many as its size asks) and Qwen2-VL
(images as variable numbers of patches described by `image_grid_thw`; per-token `mm_token_type_ids`).
Tiny random models of each (tests/tiny_vlms.py), a batch mixing image sizes, two images in one example
and an example without one."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest

from tests.tiny_vlms import build_idefics3, build_qwen2_vl, qwen2_vl_processor
from trainers.data_format import parse_jsonl
from trainers.lora_sft import _collate, language_model_targets
from trainers.tokenization import IGNORE_INDEX
from trainers.vision import data_url_loader, tokenize_all_vision


def _auto_processor(folder: Path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(folder)


FAMILIES = {"idefics3": (build_idefics3, _auto_processor), "qwen2_vl": (build_qwen2_vl, qwen2_vl_processor)}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def vlm(request, tmp_path_factory):
    build, load = FAMILIES[request.param]
    folder = build(tmp_path_factory.mktemp(request.param))
    return folder, load(folder)


def _picture(colour: str, size: tuple[int, int]) -> dict:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    url = "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()
    return {"type": "image_url", "image_url": {"url": url}}


def _example(parts: list[dict], answer: str) -> dict:
    question = {"type": "text", "text": "What colour is it?"}
    return {
        "messages": [
            {"role": "user", "content": [*parts, question]},
            {"role": "assistant", "content": answer},
        ]
    }


EXAMPLES = [
    _example([_picture("red", (64, 64))], "red"),
    _example([_picture("blue", (100, 60))], "blue"),
    _example([_picture("green", (30, 90))], "green"),
    _example([_picture("red", (64, 64)), _picture("blue", (120, 120))], "red and blue"),
    {"messages": [{"role": "user", "content": "No picture here."}, {"role": "assistant", "content": "none"}]},
]


def test_each_family_trains_lora_on_its_language_model_with_all_its_image_inputs(vlm) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    folder, processor = vlm
    data = "".join(json.dumps(e) + "\n" for e in EXAMPLES).encode()
    examples = tokenize_all_vision(processor, parse_jsonl(data), data_url_loader(), 1024)
    for example, row in zip(examples, EXAMPLES, strict=True):  # loss only on the assistant's words
        trained = processor.tokenizer.decode([t for t in example.labels if t != IGNORE_INDEX]).strip()
        assert trained.startswith(row["messages"][1]["content"])
        assert trained.removeprefix(row["messages"][1]["content"]).strip() in (
            "<end_of_utterance>",
            "<|im_end|>",
        )

    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
    decoder = model.get_decoder()
    decoder_name = next(name for name, module in model.named_modules() if module is decoder)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=language_model_targets(model, ["all-linear"]))
    model = get_peft_model(model, lora)
    adapted = [name for name, _ in model.named_modules() if name.endswith(".lora_A")]
    assert adapted and all(f".{decoder_name}." in name for name in adapted)  # never the tower or projector

    batch = _collate(examples, processor.tokenizer.pad_token_id, "cpu", torch.float32)
    pictures = [inputs for inputs in (e.image_inputs() for e in examples) if inputs]
    assert len(pictures) == 4 and set(batch) >= {"pixel_values"} | set(pictures[0])
    kept = [value for e in examples for value in vars(e).values()]
    assert not any(isinstance(value, torch.Tensor) for value in kept)  # made for each batch, not held
    shifted = {**batch, "pixel_values": batch["pixel_values"] + 1.0}
    with torch.no_grad():  # the pictures reach the model: other pixels, another loss
        assert model(**shifted).loss.item() != pytest.approx(model(**batch).loss.item(), abs=1e-6)

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(20):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.8, losses  # random weights: a near-uniform start, a steady fall


def test_a_batch_pads_what_varies_between_its_images(vlm) -> None:
    import torch

    _, processor = vlm
    data = "".join(json.dumps(e) + "\n" for e in EXAMPLES[:4]).encode()
    examples = tokenize_all_vision(processor, parse_jsonl(data), data_url_loader(), 1024)
    batch = _collate(examples, processor.tokenizer.pad_token_id, "cpu", torch.bfloat16)
    made = [e.image_inputs() for e in examples]
    assert batch["pixel_values"].dtype == torch.bfloat16
    for key, joined in batch.items():
        if key in ("input_ids", "attention_mask", "labels"):
            continue
        parts = [inputs[key] for inputs in made] if key in made[0] else None
        if parts is None:  # a per-token input: one row per example, padded like the ids
            assert tuple(joined.shape) == tuple(batch["input_ids"].shape)
            continue
        assert joined.shape[0] == sum(p.shape[0] for p in parts)
        assert tuple(joined.shape[1:]) == tuple(
            max(p.shape[d] for p in parts) for d in range(1, parts[0].ndim)
        )
        row = 0
        for part in parts:  # each example's values in place, zeros around them
            region = joined[(slice(row, row + part.shape[0]), *(slice(0, n) for n in part.shape[1:]))]
            assert torch.equal(region.to(part.dtype), part.to(joined.dtype).to(part.dtype))
            assert joined[row : row + part.shape[0]].float().abs().sum() == pytest.approx(
                region.float().abs().sum().item(), rel=1e-3
            )
            row += part.shape[0]
