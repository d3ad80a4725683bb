"""RMSNorm: scale each hidden vector to unit root-mean-square, then by a learned weight.

The formula is rms_norm in minillama/ops/reference/rms_norm.py; the module holds the weight
and calls it through the ops table (minillama/ops/table.py)."""

from __future__ import annotations

import torch
from torch import nn

from minillama.ops.table import Ops


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float, ops: Ops):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps
        self.ops = ops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, hidden] -> [N, hidden], x / sqrt(mean(x^2) + eps) * weight."""
        return self.ops.rms_norm(x, self.weight, self.eps)

    def add_and_norm(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add x to the residual stream, then normalise: -> (normed, x + residual), both [N, hidden].

        Doing both at once lets a fused kernel read the hidden vector once instead of three
        times (add, then the norm's two passes)."""
        return self.ops.add_rms_norm(x, residual, self.weight, self.eps)
