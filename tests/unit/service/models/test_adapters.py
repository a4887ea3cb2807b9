"""The adapter checks that keep a broken adapter away from the engine (service.models.adapters)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from service.models.adapters import AdapterError, check_adapter_folder


def write_adapter(folder: Path, r: int = 8, **config: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": r, "target_modules": ["q_proj"], **config})
    )
    header = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    (folder / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    return folder


def test_a_good_adapter_passes(tmp_path: Path) -> None:
    assert check_adapter_folder(write_adapter(tmp_path), max_rank=16)["r"] == 8


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda f: (f / "adapter_config.json").unlink(), "no adapter_config.json"),
        (lambda f: (f / "adapter_config.json").write_text("{"), "not valid JSON"),
        (lambda f: write_adapter(f, r=32), "rank 32 is above the served maximum 16"),
        (lambda f: write_adapter(f, modules_to_save=["lm_head"]), "modules_to_save"),
        (lambda f: write_adapter(f, peft_type="IA3"), "not describe a LoRA"),
        (lambda f: (f / "adapter_model.safetensors").unlink(), "no adapter_model.safetensors"),
        (lambda f: (f / "adapter_model.safetensors").write_bytes(b"\1\2"), "truncated"),
        (
            lambda f: (f / "adapter_model.safetensors").write_bytes(
                (f / "adapter_model.safetensors").read_bytes()[:-3]
            ),
            "tensor data does not match",
        ),
    ],
)
def test_broken_adapters_are_named(tmp_path: Path, breakage, message: str) -> None:
    folder = write_adapter(tmp_path)
    breakage(folder)
    with pytest.raises(AdapterError, match=message):
        check_adapter_folder(folder, max_rank=16)
