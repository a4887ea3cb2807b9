"""Fine-tuning the test VLM through the official openai client: images as data URLs and as uploaded files,
a real Ray job with DeepSpeed and the default hyperparameters; the adapter must see the colour."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import openai
from PIL import Image

from bench import vision_task
from service.fine_tuning.service import adapter_prefix
from service.platform.settings import VISION_TEST_MODEL
from tests.integration.helpers import (
    MODELS_DIR,
    RunningStack,
    greedy_on_pictures,
    store_of,
    wait_eval_run,
    wait_job,
)


def _answers(model, processor, pictures: list[tuple[bytes, str]]) -> list[str]:
    return greedy_on_pictures(model, processor, [png for png, _ in pictures], vision_task.QUESTION)


def _accuracy(answers: list[str], pictures: list[tuple[bytes, str]]) -> float:
    return sum(vision_task.is_right(a, c) for a, (_, c) in zip(answers, pictures, strict=True)) / len(
        pictures
    )


def test_a_vision_fine_tune_with_the_defaults_learns_to_see_the_colour(
    client: openai.OpenAI, stack: RunningStack, tmp_path: Path
) -> None:
    examples = vision_task.training_examples(32, seed=0)  # 8 a colour; batches of 4, up to 120 steps
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
    assert _accuracy(_answers(base, processor, held_out), held_out) <= 0.25  # it cannot see: four colours
    tuned = PeftModel.from_pretrained(base, folder)
    expected = _answers(tuned, processor, held_out)
    assert _accuracy(expected, held_out) >= 0.9

    # Served by vLLM: the same answers as transformers + peft on the same inputs (greedy), for images sent
    # as data URLs and as uploaded files.
    served = [
        client.chat.completions.create(
            model=job.fine_tuned_model,
            messages=[vision_task.user_message(vision_task.data_url(png))],
            temperature=0,
            max_tokens=4,
        )
        .choices[0]
        .message.content
        for png, _ in held_out
    ]
    assert served == expected
    png, colour = held_out[0]
    file_id = client.files.create(file=("h.png", png), purpose="vision").id
    stream = client.chat.completions.create(
        model=job.fine_tuned_model,
        messages=[vision_task.user_message(file_id)],
        temperature=0,
        max_tokens=4,
        stream=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected[0]
    # A 5 MB picture, past gRPC's default 4 MB message limit between the API and the engine once the API
    # has inlined the file as a data URL, is served too.
    noise = io.BytesIO()
    Image.frombytes("RGB", (1400, 1200), random.Random(0).randbytes(1400 * 1200 * 3)).save(noise, "PNG")
    assert len(noise.getvalue()) > 4 * 1024**2
    big = client.files.create(file=("noise.png", noise.getvalue()), purpose="vision").id
    answer = client.chat.completions.create(
        model=job.fine_tuned_model, messages=[vision_task.user_message(big)], temperature=0, max_tokens=4
    )
    assert answer.choices[0].message.content

    # An eval over image items reports the same accuracy.
    items = [{"item": {"picture": vision_task.data_url(p), "colour": c}} for p, c in held_out]
    evaluation = client.evals.create(
        name="colours",
        data_source_config={
            "type": "custom",
            "item_schema": {"type": "object"},
            "include_sample_schema": True,
        },
        testing_criteria=[
            {
                "type": "string_check",
                "name": "colour",
                "input": "{{sample.output_text}}",
                "operation": "ilike",
                "reference": "{{item.colour}}",
            }
        ],
    )
    run = client.evals.runs.create(
        evaluation.id,
        data_source={
            "type": "completions",
            "model": job.fine_tuned_model,
            "source": {"type": "file_content", "content": items},
            "input_messages": {
                "type": "template",
                "template": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_image", "image_url": "{{item.picture}}"},
                            {"type": "input_text", "text": vision_task.QUESTION},
                        ],
                    }
                ],
            },
            "sampling_params": {"temperature": 0, "max_completion_tokens": 4},
        },
    )
    run = wait_eval_run(client, evaluation.id, run.id)
    contains = sum(c in a.lower() for a, (_, c) in zip(expected, held_out, strict=True)) / len(held_out)
    assert run.status == "completed" and run.result_counts.passed / run.result_counts.total == contains

    # The CLI attaches an image to a turn.
    picture = tmp_path / "held-out.png"
    picture.write_bytes(png)
    args = ("chat", job.fine_tuned_model, "--image", str(picture), "--temperature", "0")
    assert expected[0] in stack.cli(*args, input=vision_task.QUESTION + "\n").stdout
