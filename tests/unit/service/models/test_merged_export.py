"""The merged export: an adapter folded into the real SmolLM2's weights answers as base + adapter does."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.platform.settings import DEFAULT_BASE_MODEL
from tests.helpers import ADMIN, MemoryStore, assert_openai_error, auth, offline_settings
from tests.unit.service.models.test_imports import MODELS, tar_gz, upload

BASE = MODELS / DEFAULT_BASE_MODEL
PROMPTS = ["What is the capital of France?", "Name a colour.", "Say hello."]


@pytest.fixture(scope="module")
def peft_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter on every attention projection whose B matrices are random: it changes the logits."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float32)
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"]))
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    folder = tmp_path_factory.mktemp("adapter")
    lora.save_pretrained(folder)
    return folder


def logits(model, tokenizer) -> list:
    import torch

    out = []
    for prompt in PROMPTS:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )["input_ids"]
        with torch.no_grad():
            out.append(model(input_ids=ids).logits[0, -1])
    return out


def test_a_merged_export_answers_as_base_and_adapter(peft_adapter: Path, tmp_path: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    app = create_app(offline_settings(tmp_path, models_dir=MODELS), store=MemoryStore())
    with TestClient(app, headers=auth(ADMIN)) as client:
        body = {"file": upload(client, tar_gz(peft_adapter)), "base_model": DEFAULT_BASE_MODEL}
        model = client.post("/v1/models", json=body).json()["id"]
        got = client.get(f"/v1/models/{model}/content", params={"format": "merged", "dtype": "float32"})
        assert got.status_code == 200 and got.headers["content-type"] == "application/x-tar"
        assert got.headers["content-disposition"].endswith('-merged.tar"')
        with tarfile.open(fileobj=io.BytesIO(got.content)) as archive:
            archive.extractall(tmp_path / "merged", filter="data")
        default = client.get(f"/v1/models/{model}/content", params={"format": "merged"})
        with tarfile.open(fileobj=io.BytesIO(default.content)) as archive:
            config = json.load(archive.extractfile("config.json"))
        assert (config.get("dtype") or config.get("torch_dtype")) == "bfloat16"  # the base's precision
        # A base model has nothing to merge; another tenant's model does not exist for this one.
        assert_openai_error(client.get(f"/v1/models/{DEFAULT_BASE_MODEL}/content?format=merged"), 400)
        other = client.post("/v1/admin/api_keys", json={"tenant": "other"}).json()["key"]
        resp = client.get(f"/v1/models/{model}/content?format=merged", headers=auth(other))
        assert_openai_error(resp, 404, "model_not_found")

    merged_dir = tmp_path / "merged"
    assert {"tokenizer.json", "chat_template.jinja", "config.json", "model.safetensors"} <= {
        p.name for p in merged_dir.iterdir()
    }
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float32)
    plain = logits(base, tokenizer)
    reference = logits(PeftModel.from_pretrained(base, peft_adapter), tokenizer)
    for m, r, p in zip(logits(merged, tokenizer), reference, plain, strict=True):
        assert torch.allclose(m, r, atol=1e-3), (m - r).abs().max()
        assert not torch.allclose(r, p, atol=1e-2)  # the adapter changes them
