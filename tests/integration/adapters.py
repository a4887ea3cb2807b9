"""Adapters made with peft in the tests (random but seeded LoRA weights) and registered in a running stack
the way a finished fine-tuning job registers its model: files in the object store, a row in the registry."""

from __future__ import annotations

import json
from pathlib import Path

from service.fine_tuning.service import adapter_prefix
from service.platform.db import Database, FineTunedModelRow
from service.platform.settings import DEFAULT_BASE_MODEL, Settings
from service.platform.storage import ObjectStore, S3Credentials, store_credentials
from tests.integration.conftest import MODELS_DIR, RunningStack

BASE_PATH = MODELS_DIR / DEFAULT_BASE_MODEL


def make_adapter(folder: Path, seed: int, rank: int = 8, scale: float = 0.05) -> Path:
    """A LoRA adapter on q/v projections whose B matrices are random (seeded), so it changes the answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(BASE_PATH, dtype=torch.float32)
    peft_model = get_peft_model(
        model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"])
    )
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, scale)
    peft_model.save_pretrained(folder)
    return folder


def store_of(stack: RunningStack) -> ObjectStore:
    creds = store_credentials(Settings(data_dir=stack.data_dir))
    endpoint = stack.state["s3_endpoint_url"]
    return ObjectStore(
        S3Credentials(endpoint, creds.access_key_id, creds.secret_access_key, creds.region), "tuneserve"
    )


def register_adapter(stack: RunningStack, folder: Path, name: str, tenant: str = "default") -> str:
    """Upload `folder` and register it as `<base>:<name>` for `tenant`; returns the model id."""
    model_id = f"{DEFAULT_BASE_MODEL}:{name}"
    store_of(stack).put_folder(adapter_prefix(model_id), folder)
    db = Database(f"sqlite:///{stack.data_dir / 'tuneserve.db'}")
    with db.session() as s:
        s.add(
            FineTunedModelRow(
                id=model_id,
                tenant_id=tenant,
                base_model=DEFAULT_BASE_MODEL,
                adapter_prefix=adapter_prefix(model_id),
            )
        )
    return model_id


def adapter_config(folder: Path) -> dict:
    return json.loads((folder / "adapter_config.json").read_text())
