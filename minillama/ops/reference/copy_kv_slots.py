"""Copy-on-write of KV slots, readable: the reference for ops/triton/copy_kv_slots.py."""

from __future__ import annotations

import torch


def copy_kv_slots(kv_cache: torch.Tensor, src_slots: torch.Tensor, dst_slots: torch.Tensor) -> None:
    """kv_cache [L, 2, blocks, block_size, Hkv, D]: slot dst_slots[m] of every layer's K and V
    becomes a copy of slot src_slots[m] ([M] int64 flat slot numbers, block * block_size +
    offset). Every source is read before any destination is written."""
    cache = kv_cache.flatten(2, 3)  # [L, 2, blocks * block_size, Hkv, D], a view
    cache[:, :, dst_slots] = cache[:, :, src_slots]  # a gather of [L, 2, M, Hkv, D], then a scatter
