"""store_kvcache: write the new tokens' keys and values into the paged KV cache."""

import torch


def store_kvcache(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Copy token t's K/V into cache slot slot_mapping[t].

    key, value: [N, Hkv, D], the N new tokens of the batch.
    k_cache, v_cache: [num_blocks, block_size, Hkv, D]. Seen flat, [num_blocks * block_size,
    Hkv, D], slot s is simply row s: block s // block_size, offset s % block_size.
    slot_mapping: [N] int64, built by the model runner from each sequence's block table.
    """
    num_kv_heads, head_dim = k_cache.shape[-2:]
    k_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, slot_mapping, key)
    v_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, slot_mapping, value)
