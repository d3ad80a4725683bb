"""Copy-on-write of KV slots, all copies in one launch: what a step's forks copy.

A fork (LLMEngine.fork, a sample, a beam) shares its parent's full KV blocks and gets a copy of
the slots of the parent's last, partly filled block (BlockManager.fork). A step of 64 beam
searches makes about a hundred such copies, every one across all layers, K and V.

Why a kernel of its own: the paged cache on a large GPU holds more than 2^31 elements (the
1B model's cache on an H200 holds about 10^11), and PyTorch's element-wise and indexing
kernels then split their work into pieces that 32-bit offsets can address, one launch per piece:
a copy across every layer's K and V becomes dozens of launches, and a step's copies hundreds of
microseconds of host time, which the next step waits for. This kernel addresses the cache with
64-bit offsets and copies every slot of every plane (layer, K or V) in one launch.

The cache is seen as [P, S, R]: P = layers x 2 planes, S = blocks x block_size slots, R = Hkv x
D elements of one slot in one plane (a contiguous row). Program (c, p) copies the first
num_slots rows of block src to block dst in plane p, as one [block_size, R] tile masked to
num_slots rows. The host sends the copies as they are, [C, 3] (src, dst, num_slots): expanding
them into one pair of slot numbers per row on the host cost more than the copy itself. It is a
copy: the result is bit-identical to the indexing it replaces (ops/reference/copy_kv_slots.py,
which serves the CPU and is the reference the tests compare with).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _copy_slots_kernel(cache_ptr, copies_ptr, plane_stride, BLOCK_SIZE: tl.constexpr, SLOTS: tl.constexpr,
                       ROW: tl.constexpr, CHUNK: tl.constexpr):
    c = tl.program_id(0)  # which copy
    plane = tl.program_id(1).to(tl.int64)  # which (layer, K or V)
    src = tl.load(copies_ptr + 3 * c)  # int64 block ids
    dst = tl.load(copies_ptr + 3 * c + 1)
    num_slots = tl.load(copies_ptr + 3 * c + 2)
    base = cache_ptr + plane * plane_stride
    slot = tl.arange(0, SLOTS)[:, None]  # [SLOTS, 1]: SLOTS = block_size rounded up to a power of 2
    for start in range(0, ROW, CHUNK):
        offsets = start + tl.arange(0, CHUNK)[None, :]  # [1, CHUNK]
        mask = (slot < num_slots) & (offsets < ROW)
        rows = tl.load(base + (src * BLOCK_SIZE + slot) * ROW + offsets, mask=mask)
        tl.store(base + (dst * BLOCK_SIZE + slot) * ROW + offsets, rows, mask=mask)


def copy_kv_slots(kv_cache: torch.Tensor, copies: torch.Tensor) -> None:
    """kv_cache [L, 2, blocks, block_size, Hkv, D], contiguous; copies [C, 3] int64 rows (src_block,
    dst_block, num_slots) on the cache's device: the first num_slots slots of block dst become a
    copy of block src's, in every layer's K and V. No destination block may also be a source."""
    if copies.shape[0] == 0:
        return
    num_planes = kv_cache.shape[0] * kv_cache.shape[1]
    block_size, row = kv_cache.shape[3], kv_cache.shape[4] * kv_cache.shape[5]
    slots = triton.next_power_of_2(block_size)
    chunk = min(triton.next_power_of_2(row), max(16, 8192 // slots))  # a tile of at most 8192 elements
    plane_stride = kv_cache.stride(1)  # elements from one plane to the next
    _copy_slots_kernel[(copies.shape[0], num_planes)](kv_cache, copies, plane_stride, block_size, slots, row, chunk)
