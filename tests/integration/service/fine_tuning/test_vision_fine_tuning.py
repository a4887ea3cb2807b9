"""Fine-tuning the test VLM through the official openai client: images as data URLs and as uploaded files,
a real Ray job with DeepSpeed and the default hyperparameters; the adapter must see the colour."""

from __future__ import annotations

import io
import json
from pathlib import Path

import openai

from bench import vision_task
from service.fine_tuning.service import adapter_prefix
from service.platform.settings import VISION_TEST_MODEL
from tests.integration.helpers import MODELS_DIR, RunningStack, store_of, wait_job


def _accuracy(model, processor, pictures: list[tuple[bytes, str]]) -> float:
    import torch
    from PIL import Image

    right = 0
    for png, colour in pictures:
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": vision_task.QUESTION}]}
        ]
        text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = processor(
            text=[text], images=[Image.open(io.BytesIO(png)).convert("RGB")], return_tensors="pt"
        )
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        answer = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        right += vision_task.is_right(answer, colour)
    return right / len(pictures)


def test_a_vision_fine_tune_with_the_defaults_learns_to_see_the_colour(
    client: openai.OpenAI, stack: RunningStack, tmp_path: Path
) -> None:
    examples = vision_task.training_examples(32, seed=0)  # 8 pictures a colour; batches of 4, 120 steps
    # A quarter of the images go as uploaded files (purpose "vision"), referenced by their file id.
    for example in examples[::4]:
        image = example["messages"][0]["content"][0]["image_url"]
        png = vision_task.decode(image["url"])
        image["url"] = client.files.create(file=("p.png", png), purpose="vision").id
    data = "".join(json.dumps(e) + "\n" for e in examples).encode()
    train = client.files.create(file=("colours.jsonl", data), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=VISION_TEST_MODEL, training_file=train.id, seed=0)
    job = wait_job(client, job.id, {"succeeded", "failed", "cancelled"}, timeout=1200)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model in {m.id for m in client.models.list()}

    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = store_of(stack).get_folder(adapter_prefix(job.fine_tuned_model), tmp_path / "adapter")
    processor = AutoProcessor.from_pretrained(MODELS_DIR / VISION_TEST_MODEL)
    base = AutoModelForImageTextToText.from_pretrained(MODELS_DIR / VISION_TEST_MODEL, dtype=torch.bfloat16)
    held_out = vision_task.held_out(16, seed=1)
    assert _accuracy(base, processor, held_out) <= 0.25  # it cannot see: four colours
    tuned = PeftModel.from_pretrained(base, folder)
    assert _accuracy(tuned, processor, held_out) >= 0.9
