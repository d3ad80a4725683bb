"""Attention through torch's scaled_dot_product_attention (SDPA), for any device.

SDPA wants rectangular [B, H, L, D] tensors, so the ragged batch is scattered into a padded one
(one indexed copy, no loop over sequences) and a boolean mask hides padding and the future.
Keys in the paged cache are gathered through the block tables. Same signatures and results as
ops/reference/reference_attention.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _ragged_to_padded_index(cu_seqlens: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each of `total` flat tokens, its sequence and its row in that sequence: [total] each."""
    lengths = cu_seqlens.diff()
    seq = torch.repeat_interleave(torch.arange(lengths.numel(), device=cu_seqlens.device), lengths, output_size=total)
    row = torch.arange(total, device=cu_seqlens.device) - cu_seqlens[seq].long()
    return seq, row


def _pad(x: torch.Tensor, seq: torch.Tensor, row: torch.Tensor, batch: int, length: int) -> torch.Tensor:
    """Scatter flat [N, heads, D] rows into a zero-padded [batch, length, heads, D]."""
    padded = x.new_zeros(batch, length, *x.shape[1:])
    padded[seq, row] = x
    return padded


def _attend_padded(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float
) -> torch.Tensor:
    """q: [B, Lq, H, D]; k, v: [B, Lk, Hkv, D]; mask: [B, Lq, Lk] True where allowed."""
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
        attn_mask=mask.unsqueeze(1), scale=scale, enable_gqa=True,
    )
    return out.transpose(1, 2)  # [B, Lq, H, D]


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
    scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
    batch = cu_seqlens_q.numel() - 1
    seq_q, row_q = _ragged_to_padded_index(cu_seqlens_q, q.shape[0])
    q_pad = _pad(q, seq_q, row_q, batch, max_seqlen_q)
    if block_table is None:
        seq_k, row_k = _ragged_to_padded_index(cu_seqlens_k, k.shape[0])
        k_pad = _pad(k, seq_k, row_k, batch, max_seqlen_k)
        v_pad = _pad(v, seq_k, row_k, batch, max_seqlen_k)
    else:  # paged caches: [B, max_blocks * block_size, Hkv, D], cut to the longest sequence
        k_pad = k[block_table.long()].flatten(1, 2)[:, :max_seqlen_k]
        v_pad = v[block_table.long()].flatten(1, 2)[:, :max_seqlen_k]
    q_len = cu_seqlens_q.diff()[:, None, None]  # [B, 1, 1]
    k_len = cu_seqlens_k.diff()[:, None, None]
    rows = torch.arange(max_seqlen_q, device=q.device)[None, :, None]  # [1, Lq, 1]
    cols = torch.arange(max_seqlen_k, device=q.device)[None, None, :]  # [1, 1, Lk]
    mask = cols < k_len
    if causal:  # query row r sits at position r + (k_len - q_len)
        mask = mask & (cols <= rows + (k_len - q_len))
    out = _attend_padded(q_pad, k_pad, v_pad, mask, scale)
    return out[seq_q, row_q]


def flash_attn_with_kvcache(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cache_seqlens: torch.Tensor,
    block_table: torch.Tensor,
    softmax_scale: float | None = None,
    causal: bool = True,
) -> torch.Tensor:
    # Keys are gathered over block_table's whole width and masked by length. The one query is
    # the newest token, so causal masking hides nothing more.
    scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
    k_pad = k_cache[block_table.long()].flatten(1, 2)  # [B, max_blocks * block_size, Hkv, D]
    v_pad = v_cache[block_table.long()].flatten(1, 2)
    cols = torch.arange(k_pad.shape[1], device=q.device)
    mask = (cols[None, :] < cache_seqlens[:, None]).unsqueeze(1)  # [B, 1, Lk]
    return _attend_padded(q, k_pad, v_pad, mask, scale)
