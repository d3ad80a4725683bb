"""RMSNorm: scale each hidden vector to unit root-mean-square, then by a learned weight."""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from minillama.model import c_kernels

C_SOURCE = Path(__file__).with_name("rms_norm.c")
C_MAX_ROWS = 8  # more rows: PyTorch's vectorised ops do as well


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps
        self.fused = False  # True: the Triton kernels of fused_ops (set on CUDA by the loader)
        self.c_kernel = False  # True: rms_norm.c for up to 8 rows (set on a CPU in fp32 by the engine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, hidden] -> [N, hidden], x / sqrt(mean(x^2) + eps) * weight.

        Normalised in fp32 and cast back before the weight multiplies, as Hugging Face does, so
        bf16 results match theirs bit for bit."""
        if self.fused:
            from minillama.model import fused_ops

            return fused_ops.rms_norm(x, self.weight, self.eps)
        if self.c_kernel and x.shape[0] <= C_MAX_ROWS and not torch.is_grad_enabled():
            return _c_add_rms_norm(None, x, self.weight, self.eps)[0]
        return self.weight * F.rms_norm(x.float(), self.weight.shape, eps=self.eps).to(x.dtype)

    def add_and_norm(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add x to the residual stream, then normalise: -> (normed, x + residual).

        Doing both at once lets the fused kernel read the hidden vector once instead of three
        times (add, then the norm's two passes)."""
        if self.fused:
            from minillama.model import fused_ops

            return fused_ops.fused_add_rms_norm(x, residual, self.weight, self.eps)
        if self.c_kernel and x.shape[0] <= C_MAX_ROWS and not torch.is_grad_enabled():
            return _c_add_rms_norm(x, residual, self.weight, self.eps)
        residual = x + residual
        return self(residual), residual


def c_kernel_available() -> bool:
    """Build rms_norm.c if it is not in the cache yet; False (after one warning) if it cannot be."""
    return _c_library() is not None


def _c_add_rms_norm(
    x: torch.Tensor | None, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """rms_norm.c: x, residual [N, hidden] fp32 (x may be None) -> (normed, residual + x)."""
    residual = residual.contiguous()
    x = x.contiguous() if x is not None else None
    normed, stream = torch.empty_like(residual), torch.empty_like(residual)
    rows, size = residual.shape
    _c_library().add_rms_norm(
        x.data_ptr() if x is not None else None, residual.data_ptr(), weight.data_ptr(), normed.data_ptr(),
        stream.data_ptr(), rows, size, eps,
    )
    return normed, stream


@functools.cache
def _c_library() -> ctypes.CDLL | None:
    library = c_kernels.load(C_SOURCE)
    if library is not None:
        library.add_rms_norm.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int] * 2 + [ctypes.c_float]
        library.add_rms_norm.restype = None
    return library
