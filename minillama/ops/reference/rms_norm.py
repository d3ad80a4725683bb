"""RMSNorm, the textbook formula: scale each hidden vector to unit root-mean-square, then by a
learned weight. The model's RMSNorm module (minillama/model/norm.py) calls these through the ops
table; the fused kernels (ops/cpu/cpu_ops.c, ops/triton/fused_ops.py) are tested against them."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x: [N, hidden] -> [N, hidden], x / sqrt(mean(x^2) + eps) * weight.

    Normalised in fp32 and cast back before the weight multiplies, as Hugging Face does, so
    bf16 results match theirs bit for bit."""
    return weight * F.rms_norm(x.float(), weight.shape, eps=eps).to(x.dtype)


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Add x to the residual stream, then normalise: -> (normed, x + residual), both [N, hidden].

    One function for both so that a fused kernel can read the hidden vector once instead of
    three times (add, then the norm's two passes)."""
    residual = x + residual
    return rms_norm(residual, weight, eps), residual
