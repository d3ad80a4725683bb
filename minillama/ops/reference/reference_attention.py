"""The reference attention: readable pure PyTorch, one sequence at a time, in fp32.

Every fast path (SDPA, flash-attn, Triton) has these two functions' signatures, taken from
flash-attn, and is tested against them:

- flash_attn_varlen_func: prefill. The batch is ragged: the new tokens of all sequences laid
  end to end, located by cu_seqlens (prefix sums of lengths).
- flash_attn_with_kvcache: decode. One new query per sequence, whose keys and values are read
  from the paged KV cache through the sequence's block table.

Shapes: N new tokens, B sequences, H query heads, Hkv key/value heads, D head dim.
"""

from __future__ import annotations

import torch


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool) -> torch.Tensor:
    """Attention of one sequence. q: [Lq, H, D]; k, v: [Lk, Hkv, D] -> [Lq, H, D].

    The Lq queries are the last Lq of the Lk positions (Lk > Lq when a prefix is already
    cached), so query i sits at position i + Lk - Lq and, when causal, sees keys 0 .. that.
    """
    num_heads, num_kv_heads = q.shape[1], k.shape[1]
    # Grouped-query attention: each K/V head serves a group of H / Hkv query heads.
    k = k.repeat_interleave(num_heads // num_kv_heads, dim=1)  # [Lk, H, D]
    v = v.repeat_interleave(num_heads // num_kv_heads, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.float(), k.float()) * scale  # [H, Lq, Lk]
    if causal:
        lq, lk = q.shape[0], k.shape[0]
        query_pos = torch.arange(lq, device=q.device)[:, None] + (lk - lq)
        future = torch.arange(lk, device=q.device)[None, :] > query_pos  # [Lq, Lk]
        scores = scores.masked_fill(future, float("-inf"))
    probs = scores.softmax(dim=-1)  # each row sums to 1 over the keys
    return torch.einsum("hqk,khd->qhd", probs, v.float()).to(q.dtype)


def gather_paged(cache: torch.Tensor, block_table: torch.Tensor, length: int) -> torch.Tensor:
    """A sequence's first `length` tokens of a paged cache: [length, Hkv, D].

    cache: [num_blocks, block_size, Hkv, D]; block_table: [max_blocks], logical -> physical.
    """
    block_size = cache.shape[1]
    num_blocks = (length + block_size - 1) // block_size
    blocks = cache[block_table[:num_blocks].long()]  # [num_blocks, block_size, Hkv, D]
    return blocks.flatten(0, 1)[:length]


def flash_attn_varlen_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    softmax_scale: float | None = None,
    causal: bool = True,
    block_table: torch.Tensor | None = None,
) -> torch.Tensor:
    """Prefill. q: [N, H, D]. k, v: [Nk, Hkv, D] laid out like q, or, with block_table
    ([B, max_blocks]), the paged caches [num_blocks, block_size, Hkv, D]. -> [N, H, D]."""
    scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
    out = torch.empty_like(q)
    q_bounds, k_bounds = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for b in range(len(q_bounds) - 1):
        q_start, q_end = q_bounds[b], q_bounds[b + 1]
        k_start, k_end = k_bounds[b], k_bounds[b + 1]
        if block_table is None:
            k_seq, v_seq = k[k_start:k_end], v[k_start:k_end]
        else:
            k_seq = gather_paged(k, block_table[b], k_end - k_start)
            v_seq = gather_paged(v, block_table[b], k_end - k_start)
        out[q_start:q_end] = attend(q[q_start:q_end], k_seq, v_seq, scale, causal)
    return out


def flash_attn_with_kvcache(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cache_seqlens: torch.Tensor,
    block_table: torch.Tensor,
    softmax_scale: float | None = None,
    causal: bool = True,
) -> torch.Tensor:
    """Decode. q: [B, 1, H, D], each sequence's newest token, whose K/V is already in the
    cache; cache_seqlens: [B]; block_table: [B, max_blocks]. -> [B, 1, H, D]."""
    scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
    out = torch.empty_like(q)
    for b, length in enumerate(cache_seqlens.tolist()):
        k_seq = gather_paged(k_cache, block_table[b], length)
        v_seq = gather_paged(v_cache, block_table[b], length)
        out[b] = attend(q[b], k_seq, v_seq, scale, causal)
    return out
