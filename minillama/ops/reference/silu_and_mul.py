"""SwiGLU's activation, the textbook formula: silu(gate) * up, with silu(g) = g * sigmoid(g).
The fused kernels (ops/cpu/cpu_ops.c, ops/triton/fused_ops.py) are tested against it."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """gate_up: [N, 2 I], the stacked gate and up projections -> [N, I]."""
    gate, up = gate_up.chunk(2, dim=-1)  # [N, I] each
    return F.silu(gate) * up
