"""Linear: nn.Linear (same parameters, same state dict) whose product goes through the ops table,
so that a CPU decode step's few rows can take the C kernel (minillama/ops/cpu/skinny_linear.c)."""

from __future__ import annotations

import torch
from torch import nn

from minillama.ops.table import Ops


class Linear(nn.Linear):
    def __init__(self, in_features: int, out_features: int, ops: Ops):
        super().__init__(in_features, out_features, bias=False)
        self.ops = ops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, in_features] -> x @ weight.T, [N, out_features]."""
        return self.ops.linear(x, self.weight, self.bias)
