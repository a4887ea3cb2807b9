"""What the hardware can do, asked without importing torch where possible."""

from __future__ import annotations

from pathlib import Path


def cpu_has_bf16() -> bool:
    """AVX-512 BF16 or AMX: bf16 matmuls run 2-4x faster than fp32 on such a CPU."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16() -> bool:
    """bf16 where the hardware has it: CUDA with bf16, or a CPU with AVX-512 BF16 / AMX."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_has_bf16()
