"""The capacity arithmetic, on the real SmolLM2 config: exact sizes, the adapters-in-use estimate against a
simulation, and which limit a load meets first."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from deploy.capacity import Engine, Load, ModelShape, adapters_in_use, main, plan

SMOLLM2 = Path(__file__).resolve().parents[3] / "data" / "models" / "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def shape() -> ModelShape:
    return ModelShape.from_folder(SMOLLM2)


def test_sizes_from_the_config(shape: ModelShape) -> None:
    assert (shape.layers, shape.kv_heads, shape.head_dim) == (30, 3, 64)
    assert 130e6 < shape.params < 140e6  # SmolLM2-135M
    assert shape.kv_bytes_per_token("bfloat16") == 2 * 30 * 3 * 64 * 2 == 23_040
    assert shape.kv_bytes_per_token("float32") == 46_080
    # rank 16 over q, k, v, o, gate, up, down of 30 layers, bf16
    per_layer = 16 * ((576 + 576) + 2 * (576 + 192) + (576 + 576) + 2 * (576 + 1536) + (1536 + 576))
    assert shape.lora_slot_bytes(16) == 30 * per_layer * 2


def test_adapters_in_use_matches_a_simulation() -> None:
    rng = random.Random(0)
    trials = [len({rng.randrange(1000) for _ in range(200)}) for _ in range(300)]
    assert adapters_in_use(1000, 200) == pytest.approx(sum(trials) / len(trials), rel=0.02)
    assert adapters_in_use(3, 1000) == pytest.approx(3) and adapters_in_use(1000, 1) == pytest.approx(1)
    assert adapters_in_use(0, 10) == 0


def test_the_first_bottleneck_of_a_large_tenant_mix(shape: ModelShape) -> None:
    load = Load(adapters=1000, chats=200, jobs=20)
    result = plan(shape, load, Engine())  # the CPU defaults: 1 GiB KV cache, 4 adapter slots
    assert result.bottleneck == "adapter slots" and result.engines == 46  # ~181 adapters in use / 4
    assert result.engines_for["KV cache"] == 10  # 46,603 tokens a GiB / 2,048 a chat = 22 chats an engine
    assert result.training_workers == 40
    roomy = plan(shape, load, Engine(kv_cache_gib=4, max_loras=32))
    assert roomy.bottleneck == "decode tokens/s" and roomy.engines == 9  # 200 x 10 tokens/s / 230


def test_the_command_prints_the_plan(capsys: pytest.CaptureFixture) -> None:
    assert main([str(SMOLLM2), "--adapters", "10", "--chats", "5", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "first bottleneck:" in out and "23,040 bytes" in out
