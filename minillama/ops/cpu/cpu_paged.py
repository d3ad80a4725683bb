"""Decode attention on the CPU in one C call (cpu_paged.c): flash_attn_with_kvcache's signature
and results (the reference's: ops/reference/reference_attention.py), fp32 only. Prefill keeps
torch SDPA (ops/sdpa_attention.py), whose kernels do well on many query rows; a decode step has
one query row per sequence, where SDPA's gather, mask and transposes cost more than the
attention itself.

Built on first use (c_kernels.py); `--attention auto` picks it on a CPU in fp32 when it builds,
and SDPA otherwise.
"""

from __future__ import annotations

from ctypes import c_float, c_int, c_void_p
from pathlib import Path

import torch

from minillama.ops.cpu import c_kernels

KERNEL = c_kernels.CLibrary(
    Path(__file__).with_suffix(".c"), paged_decode_attention=([c_void_p] * 6 + [c_int] * 6 + [c_float], c_int)
)
available = KERNEL.available  # builds it if needed; False (after a warning) if it cannot be


def flash_attn_with_kvcache(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cache_seqlens: torch.Tensor,
    block_table: torch.Tensor,
    softmax_scale: float | None = None,
    causal: bool = True,
) -> torch.Tensor:
    """q: [B, 1, H, D] fp32, the newest token of each sequence (its K/V already in the cache);
    k_cache, v_cache: [num_blocks, block_size, Hkv, D]; cache_seqlens: [B]; block_table:
    [B, max_blocks]. -> [B, 1, H, D]. (causal hides nothing here: every cached token is at or
    before the query.)"""
    scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
    batch, _, heads, dim = q.shape
    _, block_size, kv_heads, _ = k_cache.shape
    if q.dtype != torch.float32 or not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise ValueError("the CPU decode kernel takes fp32 queries and contiguous caches")
    q = q.contiguous()
    tables = block_table.to(torch.int32).contiguous()
    lengths = cache_seqlens.to(torch.int32).contiguous()
    out = torch.empty_like(q)
    status = KERNEL.get().paged_decode_attention(
        q.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), tables.data_ptr(), lengths.data_ptr(), out.data_ptr(),
        batch, heads, kv_heads, dim, block_size, tables.shape[1], scale,
    )
    if status != 0:
        raise MemoryError("the CPU decode kernel could not allocate its scores")
    return out
