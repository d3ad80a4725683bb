"""The attention layer's first step after the qkv projection: RoPE on the queries and keys, then
the keys and values written into the paged KV cache. minillama/model/rotary.py says what RoPE is
and computes its angles; this is the arithmetic, which the fused kernels (ops/cpu/cpu_ops.c,
ops/triton/fused_ops.py) are tested against.

Shapes: N new tokens, H query heads, Hkv key/value heads, D head dim.
"""

from __future__ import annotations

import torch

from minillama.model.attention_metadata import AttentionMetadata


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate every feature pair (x[i], x[i + D/2]) of x [N, heads, D] by its angle.

    With x1, x2 the two halves: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin), which is
    x * cos + rotate_half(x) * sin with rotate_half(x) = (-x2, x1). Computed in x's dtype, as
    Hugging Face does."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


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


def rotary_and_store_kv(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """qkv: [N, H + 2 Hkv, D], per token its query heads, then key heads, then value heads; cos,
    sin: [N, 1, D]; caches [num_blocks, block_size, Hkv, D]. -> q [N, H, D] and k [N, Hkv, D]
    rotated, v [N, Hkv, D]: attention over the fresh keys, and the observers, read them."""
    num_kv_heads = k_cache.shape[2]
    num_heads = qkv.shape[1] - 2 * num_kv_heads
    # RoPE turns the positions into rotations of q and k (v is not rotated): one call for both.
    qk = apply_rotary(qkv[:, : num_heads + num_kv_heads], cos, sin)
    q, k = qk.split([num_heads, num_kv_heads], dim=1)  # [N, H, D], [N, Hkv, D]
    v = qkv[:, num_heads + num_kv_heads :]  # [N, Hkv, D]
    # Write first, then attend: the new tokens must see themselves, and sequences whose
    # prefix is cached read all their keys from the cache.
    store_kvcache(k, v, k_cache, v_cache, slot_mapping)
    return q, k, v


def rotary_and_store(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    metadata: AttentionMetadata,
) -> torch.Tensor:
    """The ops table's entry (ops/table.py): rotary_and_store_kv, returning q [N, H, D] only;
    attention then reads the keys and values from the cache."""
    return rotary_and_store_kv(qkv, cos, sin, k_cache, v_cache, metadata.slot_mapping)[0]


def rotary_store_and_keep_kv(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    metadata: AttentionMetadata,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ops table's entry for a step that also needs the keys and values as tensors (ops/table.py):
    rotary_and_store_kv, taking the slots from the step's metadata."""
    return rotary_and_store_kv(qkv, cos, sin, k_cache, v_cache, metadata.slot_mapping)
