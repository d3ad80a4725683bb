"""The linear layers of a CPU decode step: a small C kernel (skinny_linear.c) for 1-8 rows in fp32.

A decode step multiplies one row per sequence by every weight matrix, so on a CPU it takes as
long as streaming the weights from memory once. For 2 to 8 rows torch's BLAS repacks each
weight on every call; this kernel reads each weight row once, where it lies (skinny_linear.c
says how; docs/perf-notes.md, "CPU", has the figures).

The kernel is built on first use (c_kernels.py); without a C compiler the engine warns once and
uses torch's BLAS: same results, slower. minillama/ops/select.py decides which calls it takes.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch

from minillama.ops.cpu import c_kernels

KERNEL = c_kernels.CLibrary(
    Path(__file__).with_suffix(".c"), skinny_linear=([ctypes.c_void_p] * 3 + [ctypes.c_int] * 3, ctypes.c_int)
)
available = KERNEL.available  # builds it if needed; False (after a warning) if it cannot be
MAX_ROWS = 8  # as in skinny_linear.c; more rows go to BLAS, whose packing of W pays off there


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
