"""The feed-forward block: SwiGLU, silu(x W_gate) * (x W_up) then W_down."""

import torch
from torch import nn

from minillama.model.linear import Linear
from minillama.ops.table import Ops


class LlamaMLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, ops: Ops):
        super().__init__()
        # gate_proj and up_proj stacked into one matrix: one matmul instead of two.
        self.gate_up_proj = Linear(hidden_size, 2 * intermediate_size, ops)
        self.down_proj = Linear(intermediate_size, hidden_size, ops)
        self.ops = ops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, hidden] -> [N, hidden]."""
        gate_up = self.gate_up_proj(x)  # [N, 2 * intermediate]
        # silu(gate) * up: ops/reference/silu_and_mul.py
        return self.down_proj(self.ops.silu_and_mul(gate_up))
