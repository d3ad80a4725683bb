"""AttentionMetadata: how the flat batch of tokens maps onto sequences and the paged KV cache.

The model runner builds one per step and passes it down explicitly to every attention layer.
A batch is flat: the new tokens of all its sequences laid end to end, N tokens in total.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AttentionMetadata:
    is_prefill: bool
    # [N] int64: the flat KV-cache slot (physical block * block_size + offset) of each new token.
    slot_mapping: torch.Tensor
    # [B, max_blocks] int32: each sequence's block table, padded with 0. In prefill it is None
    # when no sequence has K/V in the cache yet, so attention can use the fresh K/V directly.
    block_tables: torch.Tensor | None = None
    # Prefill, the ragged batch: [B + 1] int32 prefix sums of query lengths (new tokens) and key
    # lengths (cached + new tokens), and the longest of each.
    cu_seqlens_q: torch.Tensor | None = None
    cu_seqlens_k: torch.Tensor | None = None
    max_seqlen_q: int = 0
    max_seqlen_k: int = 0
    # Decode: [B] int32, tokens in the cache for each sequence, the new one included.
    context_lens: torch.Tensor | None = None
