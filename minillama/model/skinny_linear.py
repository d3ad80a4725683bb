"""Linear layers for CPU decode steps: a small C kernel (skinny_linear.c) for 1-8 rows in fp32.

A decode step multiplies one row per sequence by every weight matrix, so on a CPU it takes as
long as streaming the weights from memory once. torch's BLAS comes close for one row, but for 2
to 8 rows it repacks each weight on every call: through the 211 weight matrices of a step of the
embedded model (2 cores, weights on huge pages), 1 row took 20.3 ms with BLAS and 18.5 with this
kernel, 8 rows 46.7 ms with BLAS and 22.9 with this kernel (see skinny_linear.c for how it
works, docs/perf-notes.md for the figures).

The kernel is built on first use (minillama/model/c_kernels.py); without a C compiler the
engine warns once and uses torch's BLAS: same results, slower.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from minillama.model import c_kernels

KERNEL = c_kernels.CLibrary(
    Path(__file__).with_suffix(".c"), skinny_linear=([ctypes.c_void_p] * 3 + [ctypes.c_int] * 3, ctypes.c_int)
)
available = KERNEL.available  # builds it if needed; False (after a warning) if it cannot be
MAX_ROWS = 8  # as in skinny_linear.c; more rows go to BLAS, which packs W to compute-bound speed


class Linear(nn.Linear):
    """nn.Linear (same parameters, same state dict) that sends 1-8 rows to the kernel once the
    engine sets `skinny` (CPU, fp32, the kernel built). Inference only: with autograd on it
    always takes F.linear, since the kernel has no backward."""

    skinny = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.skinny and x.dim() == 2 and 0 < x.shape[0] <= MAX_ROWS and not torch.is_grad_enabled():
            return skinny_linear(x, self.weight)
        return F.linear(x, self.weight, self.bias)


def skinny_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x [M, K] fp32 with M <= 8, weight [N, K] fp32 contiguous, both on the CPU -> x @ weight.T
    [M, N], computed by the C kernel (which must have been built: see available())."""
    x = x.contiguous()
    rows, width = x.shape
    out = torch.empty(rows, weight.shape[0], dtype=torch.float32)
    status = KERNEL.get().skinny_linear(x.data_ptr(), weight.data_ptr(), out.data_ptr(), rows, weight.shape[0], width)
    if status != 0:
        raise ValueError(f"skinny_linear takes 1 to {MAX_ROWS} rows, got {rows}")
    return out
