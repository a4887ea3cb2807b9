"""The grouped multi-LoRA ops of the vllm-cpu plugin (deploy/lora_cpu_ops.py) against the per-token
reference computation vLLM's torch ops do, in float32 and bfloat16."""

from __future__ import annotations

import pytest
import torch

from deploy.lora_cpu_ops import (
    bgmv_expand,
    bgmv_expand_slice,
    bgmv_shrink,
    lora_matmul,
    sgmv_expand,
    sgmv_expand_slice,
    sgmv_shrink,
)


def reference(inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """vLLM's computation, token by token, with index -1 meaning no adapter (zeros)."""
    rows = []
    for t, slot in enumerate(indices.tolist()):
        w = weights[slot].float() if slot >= 0 else torch.zeros_like(weights[0]).float()
        rows.append(w.squeeze(0) @ inputs[t].float())
    return torch.stack(rows)


def dense(out: torch.Tensor | None, rows: int, cols: int) -> torch.Tensor:
    return torch.zeros(rows, cols) if out is None else out  # None: no token has weights here


@pytest.mark.parametrize("expand", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "indices",
    [[0, 1, 2, 1, 0, 2], [-1, 0, -1, 3, 3, -1], [2, 2, 2, 2, 2, 2], [-1] * 6, [1, -1, 1, 1, 1, 1], [3]],
)
def test_lora_matmul_matches_the_per_token_reference(
    dtype: torch.dtype, indices: list[int], expand: bool
) -> None:
    torch.manual_seed(0)
    x = torch.randn(len(indices), 32, dtype=dtype)
    w = torch.randn(4, 1, 8, 32, dtype=dtype)  # 4 slots, rank 8, vLLM's [slots, 1, out, in] layout
    idx = torch.tensor(indices)
    out = dense(lora_matmul(x, w, idx, torch.float32, expand=expand), len(indices), 8)
    assert out.shape == (len(indices), 8)
    torch.testing.assert_close(out, reference(x, w, idx), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("expand", [False, True])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_an_adapter_with_nan_weights_changes_no_other_token(expand: bool, bad: float) -> None:
    """One matmul for the whole batch multiplies the other tokens' zeros by every slot's weights, and
    0 x NaN is NaN: one diverged adapter emptied the answers of every request beside it. Its slot counts
    as zeros instead (the service refuses such adapters before they get here: models.adapters)."""
    torch.manual_seed(2)
    x = torch.randn(5, 32)
    w = torch.randn(3, 1, 8, 32)
    w[1].fill_(bad)
    idx = torch.tensor([0, 1, -1, 2, 1])
    out = dense(lora_matmul(x, w, idx, torch.float32, expand=expand), 5, 8)
    assert torch.isfinite(out).all()
    clean = w.clone()
    clean[1].zero_()
    torch.testing.assert_close(out, reference(x, clean, idx))


@pytest.mark.parametrize("expand", [False, True])
def test_an_adapter_with_huge_finite_weights_changes_no_other_token(expand: bool) -> None:
    """Finite weights whose products overflow make inf in the adapter's own block of the result, and a mask
    multiplied in (inf x 0) would make NaN of the base-model tokens: the mask selects instead."""
    torch.manual_seed(3)
    x = torch.randn(4, 32, dtype=torch.bfloat16)
    w = torch.randn(3, 1, 8, 32, dtype=torch.bfloat16)
    w[0].fill_(3e38)  # near bfloat16's largest: any product sum overflows
    idx = torch.tensor([-1, 0, 2, -1])
    out = dense(lora_matmul(x, w, idx, torch.bfloat16, expand=expand), 4, 8)
    assert out[[0, 3]].eq(0).all()  # the base-model tokens: nothing added
    torch.testing.assert_close(out[2].float(), reference(x, w, idx)[2], rtol=2e-2, atol=2e-2)


def test_a_slot_written_after_a_call_is_used_by_the_next() -> None:
    """The concatenated weights are cached while the slot tensor is unchanged: vLLM loading another adapter
    into a slot (an in-place copy, as `set_lora` does) must be seen at once."""
    x = torch.ones(2, 4)
    w = torch.zeros(3, 1, 2, 4)
    idx = torch.tensor([0, 1])
    assert lora_matmul(x, w, idx, torch.float32) is None  # no adapter has weights in this module
    w[1, 0].copy_(torch.ones(2, 4))
    assert dense(lora_matmul(x, w, idx, torch.float32), 2, 2).tolist() == [[0.0, 0.0], [4.0, 4.0]]
    w[1, 0].fill_(0.5)
    assert dense(lora_matmul(x, w, idx, torch.float32), 2, 2).tolist() == [[0.0, 0.0], [2.0, 2.0]]


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
    # A module none of the batch's adapters has: adds nothing, or sets zeros.
    zero = torch.zeros(2, 4, 2)
    out = torch.ones(3, 4)
    bgmv_expand(x, zero, out, torch.tensor([0, 1, -1]), add_inputs=True)
    assert out.tolist() == [[1.0] * 4] * 3
    bgmv_expand_slice(x, zero, wide, torch.tensor([0, 1, 1]), slice_offset=3, slice_size=4, add_inputs=False)
    assert wide[:, 3:7].abs().sum() == 0
    shrunk = torch.full((3, 2), 7.0)
    bgmv_shrink(torch.ones(3, 2), zero, shrunk, torch.tensor([0, 1, 0]))
    assert shrunk.abs().sum() == 0


@pytest.mark.parametrize("slots", [[0, -1, 2], [1, 1, 1], [-1, -1, -1]])
def test_the_sequence_ops_equal_the_token_ops_on_each_sequences_tokens(slots: list[int]) -> None:
    """vLLM's sgmv_* give a slot per sequence with the sequences' lengths (it expands them per token)."""
    torch.manual_seed(1)
    lens = torch.tensor([3, 1, 2])
    per_token = torch.repeat_interleave(torch.tensor(slots), lens)
    starts, meta = torch.tensor([0, 3, 4]), (3, 3, 6)  # batches, longest, tokens: unused on CPU
    x, a, b = torch.randn(6, 16), torch.randn(3, 1, 4, 16), torch.randn(3, 1, 10, 4)
    want, got = torch.zeros(6, 4), torch.zeros(6, 4)
    bgmv_shrink(x, a, want, per_token, 0.5)
    sgmv_shrink(x, a, got, starts, lens, torch.tensor(slots), *meta, 0.5)
    torch.testing.assert_close(got, want)
    want_out, got_out = torch.ones(6, 10), torch.ones(6, 10)
    bgmv_expand(want, b, want_out, per_token, add_inputs=True)
    sgmv_expand(got, b, got_out, starts, lens, torch.tensor(slots), *meta, add_inputs=True)
    torch.testing.assert_close(got_out, want_out)
    want_wide, got_wide = torch.ones(6, 30), torch.ones(6, 30)
    bgmv_expand_slice(want, b, want_wide, per_token, 12, 10, add_inputs=False)
    sgmv_expand_slice(got, b, got_wide, starts, lens, torch.tensor(slots), *meta, 12, 10, add_inputs=False)
    torch.testing.assert_close(got_wide, want_wide)
    assert got_wide[:, :12].eq(1).all() and got_wide[:, 22:].eq(1).all()
