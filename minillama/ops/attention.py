"""Which attention implementation serves an engine: --attention's names, and what "auto" picks."""

from __future__ import annotations

import importlib.util

import torch

from minillama.errors import ConfigError
from minillama.ops import sdpa_attention
from minillama.ops.cpu import cpu_paged
from minillama.ops.reference import reference_attention
from minillama.ops.table import AttentionOps

BACKEND_NAMES = ("auto", "reference", "sdpa", "cpu", "flash-attn", "triton")


def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _takes_head_dim(name: str, head_dim: int | None) -> bool:
    """The head sizes each GPU kernel compiles for: Triton's tiles span head_dim (a power of two,
    at least tl.dot's 16); flash-attn's kernels are built for multiples of 8 up to 256."""
    if head_dim is None:
        return True
    if name == "triton":
        return head_dim >= 16 and head_dim & (head_dim - 1) == 0
    if name == "flash-attn":
        return head_dim % 8 == 0 and head_dim <= 256
    return True


def select_attention(
    name: str, device: torch.device, dtype: torch.dtype = torch.bfloat16, head_dim: int | None = None
) -> AttentionOps:
    """The implementation called `name`; "auto" picks the fastest one available for `device`,
    `dtype` and the model's `head_dim` (None: any)."""
    half = dtype in (torch.float16, torch.bfloat16)
    if name == "auto":
        if device.type == "cuda" and half and _has_module("flash_attn") and _takes_head_dim("flash-attn", head_dim):
            name = "flash-attn"
        elif device.type == "cuda" and half and _has_module("triton") and _takes_head_dim("triton", head_dim):
            name = "triton"
        elif device.type == "cpu" and dtype == torch.float32 and cpu_paged.available():
            name = "cpu"
        else:
            name = "sdpa"
    if name in ("flash-attn", "triton") and device.type != "cuda":  # first: on a CPU no dtype or shape helps
        raise ConfigError(f"--attention {name} needs a CUDA device (got {device})")
    if name in ("flash-attn", "triton") and not half:
        raise ConfigError(f"--attention {name} computes in float16/bfloat16 only (got {dtype}); use sdpa")
    if not _takes_head_dim(name, head_dim):
        raise ConfigError(f"--attention {name} has no kernel for this model's head_dim {head_dim}; use sdpa")
    if name == "reference":
        return AttentionOps(
            name, reference_attention.flash_attn_varlen_func, reference_attention.flash_attn_with_kvcache, False
        )
    if name == "cpu":
        if device.type != "cpu" or dtype != torch.float32:
            raise ConfigError(f"--attention cpu runs on the CPU in float32 only (got {device}, {dtype}); use sdpa")
        if not cpu_paged.available():
            raise ConfigError("--attention cpu needs a C compiler (cc, or $CC) to build its kernel; use sdpa")
        # Prefill through SDPA; decode through the C kernel, straight from the paged cache.
        return AttentionOps(name, sdpa_attention.flash_attn_varlen_func, cpu_paged.flash_attn_with_kvcache, False)
    if name == "sdpa":
        # Not graph-safe in practice: inside a graph its decode would gather the block tables'
        # full captured width (max_model_len tokens) for every sequence.
        return AttentionOps(name, sdpa_attention.flash_attn_varlen_func, sdpa_attention.flash_attn_with_kvcache, False)
    if name in ("flash-attn", "triton"):
        module = "flash_attn" if name == "flash-attn" else "triton"
        if not _has_module(module):
            raise ConfigError(f"--attention {name} needs the {module} package, which is not installed")
        if name == "flash-attn":
            import flash_attn

            # flash-attn's paged KV cache wants pages of a multiple of 256 tokens.
            return AttentionOps(name, flash_attn.flash_attn_varlen_func, flash_attn.flash_attn_with_kvcache, True, 256)
        from minillama.ops.triton import triton_paged

        # The kernels tile the cache by blocks of a power of two, at least 16 tokens.
        return AttentionOps(
            name, triton_paged.flash_attn_varlen_func, triton_paged.flash_attn_with_kvcache, True, 16, True
        )
    raise ConfigError(f"unknown attention backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
