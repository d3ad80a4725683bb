"""Linear: nn.Linear (same parameters, same state dict) whose product goes through the ops table,
so that a CPU decode step's few rows can take the C kernel (minillama/ops/cpu/skinny_linear.c).

A bias is one optional vector [out_features] (config.json's attention_bias, mlp_bias), added to
every row of the product, as transformers' nn.Linear(bias=True) adds it."""

from __future__ import annotations

import torch
from torch import nn

from minillama.ops.table import Ops


class Linear(nn.Linear):
    def __init__(self, in_features: int, out_features: int, ops: Ops, bias: bool = False):
        super().__init__(in_features, out_features, bias=bias)
        self.ops = ops

    def forward(self, x: torch.Tensor, with_bias: bool = True) -> torch.Tensor:
        """x: [N, in_features] -> x @ weight.T (+ bias), [N, out_features].

        with_bias=False leaves the bias out: a row-parallel layer split over tensor-parallel
        ranks adds it on one rank only, since the ranks' outputs are summed
        (minillama/parallel/shard.py)."""
        return self.ops.linear(x, self.weight, self.bias if with_bias else None)
