"""The feed-forward block: SwiGLU, silu(x W_gate) * (x W_up) then W_down."""

import torch
from torch import nn

from minillama.model.linear import Linear
from minillama.ops.table import Ops
from minillama.parallel.shard import Shard


class LlamaMLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, ops: Ops, shard: Shard, bias: bool = False):
        """bias: config.json's mlp_bias, a bias on each of the three projections."""
        super().__init__()
        features = intermediate_size // shard.world  # this rank's (all of them without tensor parallelism)
        # gate_proj and up_proj stacked into one matrix: one matmul instead of two (their biases
        # stacked likewise: [2 * features]).
        self.gate_up_proj = Linear(hidden_size, 2 * features, ops, bias=bias)
        # Row-parallel: its output summed over ranks, its bias (if any) added by one of them.
        self.down_proj = Linear(features, hidden_size, ops, bias=bias)
        self.ops = ops
        self.shard = shard

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, hidden] -> [N, hidden]."""
        gate_up = self.gate_up_proj(x)  # [N, 2 * intermediate]
        # silu(gate) * up: ops/reference/silu_and_mul.py
        down = self.down_proj(self.ops.silu_and_mul(gate_up), with_bias=self.shard.adds_row_parallel_bias)
        return self.shard.all_reduce(down)
