"""Vision examples through the test VLM's own processor: image tokens expanded, loss only on what the
assistant says (never on the image, the user turn or the template's headers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import vision_task
from service.models.test_vlm import IMAGE_SEQ_LENGTH, IMAGE_TOKEN
from service.platform.settings import VISION_TEST_MODEL
from trainers.data_format import parse_jsonl
from trainers.tokenization import IGNORE_INDEX
from trainers.vision import data_url_loader, tokenize_all_vision

VLM = Path(__file__).resolve().parents[3] / "data" / "models" / VISION_TEST_MODEL


@pytest.fixture(scope="module")
def processor():
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(VLM)


def test_only_the_assistants_words_are_trained_and_the_image_becomes_its_tokens(processor) -> None:
    [png] = [p for p, _ in vision_task.pictures(1, seed=5)]
    url = vision_task.data_url(png)
    example = {
        "messages": [
            vision_task.user_message(url),
            {"role": "assistant", "content": "red", "weight": 0},
            {"role": "user", "content": "Are you sure?"},
            {"role": "assistant", "content": "Yes, red."},
        ]
    }
    [tok] = tokenize_all_vision(processor, parse_jsonl(json.dumps(example).encode()), data_url_loader(), 512)
    image_id = processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert tok.input_ids.count(image_id) == IMAGE_SEQ_LENGTH
    assert {k: tuple(v.shape) for k, v in tok.image_inputs().items()} == {"pixel_values": (1, 3, 64, 64)}
    trained = [t for t in tok.labels if t != IGNORE_INDEX]
    assert processor.tokenizer.decode(trained) == "Yes, red.<|im_end|>\n"  # the weight-0 turn is not trained
    assert all(
        label == IGNORE_INDEX for i, label in zip(tok.input_ids, tok.labels, strict=True) if i == image_id
    )
    assert len(tok.input_ids) == len(tok.labels)


def test_an_example_too_long_with_its_images_names_its_line(processor) -> None:
    from trainers.data_format import DatasetError

    data = "".join(json.dumps(e) + "\n" for e in vision_task.training_examples(2)).encode()
    with pytest.raises(DatasetError, match=r"line 1: .* tokens \(its images included\)"):
        tokenize_all_vision(processor, parse_jsonl(data), data_url_loader(), 20)
