"""The feed-forward block: SwiGLU, silu(x W_gate) * (x W_up) then W_down."""

import torch
import torch.nn.functional as F
from torch import nn

from minillama.model import cpu_ops
from minillama.model.skinny_linear import Linear


class LlamaMLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        # gate_proj and up_proj stacked into one matrix: one matmul instead of two.
        self.gate_up_proj = Linear(hidden_size, 2 * intermediate_size, bias=False)
        self.down_proj = Linear(intermediate_size, hidden_size, bias=False)
        self.fused = False  # True: silu(gate) * up in one Triton kernel (set on CUDA by the loader)
        self.c_kernel = False  # True: the same in cpu_ops.c for a decode step's rows (CPU, fp32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, hidden] -> [N, hidden]."""
        gate_up = self.gate_up_proj(x)  # [N, 2 * intermediate]
        if self.fused:
            from minillama.model import fused_ops

            return self.down_proj(fused_ops.silu_and_mul(gate_up))
        if self.c_kernel and cpu_ops.takes(x.shape[0]):
            return self.down_proj(cpu_ops.silu_and_mul(gate_up))
        gate, up = gate_up.chunk(2, dim=-1)  # [N, intermediate] each
        return self.down_proj(F.silu(gate) * up)
