"""The fused ops of a CPU decode step (cpu_ops.c): triton/fused_ops.py's job on a GPU, here in C, fp32.

Each function below names the reference it replaces (minillama/ops/reference/, which the tests
hold it to); minillama/ops/select.py decides which calls it takes. Built on first use
(c_kernels.py).
"""

from __future__ import annotations

from ctypes import c_float, c_int, c_void_p
from pathlib import Path

import torch

from minillama.ops.cpu import c_kernels

KERNELS = c_kernels.CLibrary(
    Path(__file__).with_suffix(".c"),
    add_rms_norm=([c_void_p] * 5 + [c_int] * 2 + [c_float], None),
    rotary_and_store=([c_void_p] * 7 + [c_int] * 4, None),
    silu_and_mul=([c_void_p] * 2 + [c_int] * 2, None),
)
available = KERNELS.available  # builds them if needed; False (after a warning) if they cannot be


def add_rms_norm(
    x: torch.Tensor | None, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """x, residual: [N, hidden] (x may be None) -> (normed, stream). Replaces reference/rms_norm.py's
        stream = x + residual; normed = weight * F.rms_norm(stream, ..., eps)"""
    residual = residual.contiguous()
    x = x.contiguous() if x is not None else None
    normed, stream = torch.empty_like(residual), torch.empty_like(residual)
    rows, size = residual.shape
    KERNELS.get().add_rms_norm(
        x.data_ptr() if x is not None else None, residual.data_ptr(), weight.data_ptr(), normed.data_ptr(),
        stream.data_ptr(), rows, size, eps,
    )
    return normed, stream


def rotary_and_store(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    slot_mapping: torch.Tensor, num_heads: int, num_kv_heads: int, head_dim: int,
) -> torch.Tensor:
    """qkv: [N, H + 2 Hkv, D]; cos, sin: [N, 1, D]; caches [num_blocks, block_size, Hkv, D]
    (contiguous), written in place; slot_mapping: [N], negative = padding. -> q [N, H, D].
    Replaces reference/rotary_and_store.py (as fused_ops.rotary_and_store does on a GPU):
        qk = apply_rotary(qkv[:, : H + Hkv], cos, sin); q, k = qk.split([H, Hkv], dim=1)
        store_kvcache(k, qkv[:, H + Hkv :], k_cache, v_cache, slot_mapping)"""
    qkv, cos, sin = qkv.contiguous(), cos.contiguous(), sin.contiguous()
    slots = slot_mapping.to(torch.int64).contiguous()
    rows = qkv.shape[0]
    q = torch.empty(rows, num_heads, head_dim, dtype=qkv.dtype)
    KERNELS.get().rotary_and_store(
        qkv.data_ptr(), cos.data_ptr(), sin.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), slots.data_ptr(),
        q.data_ptr(), rows, num_heads, num_kv_heads, head_dim,
    )
    return q


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """gate_up: [N, 2 I] -> [N, I]. Replaces reference/silu_and_mul.py's
        gate, up = gate_up.chunk(2, dim=-1); F.silu(gate) * up"""
    gate_up = gate_up.contiguous()
    rows, width = gate_up.shape
    out = torch.empty(rows, width // 2, dtype=gate_up.dtype)
    KERNELS.get().silu_and_mul(gate_up.data_ptr(), out.data_ptr(), rows, width // 2)
    return out
