"""Copy-on-write of KV slots, readable: the reference for ops/triton/copy_kv_slots.py."""

from __future__ import annotations

import torch


def copy_kv_slots(kv_cache: torch.Tensor, copies: torch.Tensor) -> None:
    """kv_cache [L, 2, blocks, block_size, Hkv, D]; copies [C, 3] int64 rows (src_block,
    dst_block, num_slots): kv_cache[:, :, dst_block, :num_slots] = kv_cache[:, :, src_block,
    :num_slots] for every row, in every layer's K and V. No destination block is also a source."""
    block_size = kv_cache.shape[3]
    src_blocks, dst_blocks, counts = copies.unbind(1)  # [C] each
    # The copies' slots laid end to end, as flat slot numbers (block * block_size + offset):
    # slot j of copy c is offset j of its block.
    starts = torch.cumsum(counts, 0) - counts  # [C]: where copy c's slots begin
    offsets = torch.arange(int(counts.sum()), device=copies.device) - starts.repeat_interleave(counts)  # [M]
    src_slots = src_blocks.repeat_interleave(counts) * block_size + offsets  # [M]
    dst_slots = dst_blocks.repeat_interleave(counts) * block_size + offsets
    cache = kv_cache.flatten(2, 3)  # [L, 2, blocks * block_size, Hkv, D], a view
    cache[:, :, dst_slots] = cache[:, :, src_slots]  # a gather of [L, 2, M, Hkv, D], then a scatter
