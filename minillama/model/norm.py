"""RMSNorm: scale each hidden vector to unit root-mean-square, then by a learned weight."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minillama.model import cpu_ops


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps
        self.fused = False  # True: the Triton kernels of fused_ops (set on CUDA by the loader)
        self.c_kernel = False  # True: cpu_ops.c for a decode step's rows (set on a CPU in fp32 by the engine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, hidden] -> [N, hidden], x / sqrt(mean(x^2) + eps) * weight.

        Normalised in fp32 and cast back before the weight multiplies, as Hugging Face does, so
        bf16 results match theirs bit for bit."""
        if self.fused:
            from minillama.model import fused_ops

            return fused_ops.rms_norm(x, self.weight, self.eps)
        if self.c_kernel and cpu_ops.takes(x.shape[0]):
            return cpu_ops.add_rms_norm(None, x, self.weight, self.eps)[0]
        return self.weight * F.rms_norm(x.float(), self.weight.shape, eps=self.eps).to(x.dtype)

    def add_and_norm(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add x to the residual stream, then normalise: -> (normed, x + residual).

        Doing both at once lets the fused kernel read the hidden vector once instead of three
        times (add, then the norm's two passes)."""
        if self.fused:
            from minillama.model import fused_ops

            return fused_ops.fused_add_rms_norm(x, residual, self.weight, self.eps)
        if self.c_kernel and cpu_ops.takes(x.shape[0]):
            return cpu_ops.add_rms_norm(x, residual, self.weight, self.eps)
        residual = x + residual
        return self(residual), residual
