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
D elements of one slot in one plane (a contiguous row). Slot s is block s // block_size, offset
s % block_size. Program (m, p) copies row src[m] of plane p to row dst[m]. It is a copy: the
result is bit-identical to the indexing it replaces (minillama/engine/model_runner.py's
copy_kv_slots, which serves the CPU and is the reference the tests compare with).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _copy_slots_kernel(cache_ptr, src_ptr, dst_ptr, plane_stride, ROW: tl.constexpr, BLOCK: tl.constexpr):
    m = tl.program_id(0)  # which copy of a slot
    plane = tl.program_id(1).to(tl.int64)  # which (layer, K or V)
    src = tl.load(src_ptr + m)  # int64 slot numbers
    dst = tl.load(dst_ptr + m)
    base = cache_ptr + plane * plane_stride
    for start in range(0, ROW, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        mask = offsets < ROW
        row = tl.load(base + src * ROW + offsets, mask=mask)
        tl.store(base + dst * ROW + offsets, row, mask=mask)


def copy_kv_slots(kv_cache: torch.Tensor, src_slots: torch.Tensor, dst_slots: torch.Tensor) -> None:
    """kv_cache [L, 2, blocks, block_size, Hkv, D], contiguous: slot dst_slots[m] of every layer's
    K and V becomes a copy of slot src_slots[m] ([M] int64 flat slot numbers on the cache's
    device, block * block_size + offset). No destination may also be a source."""
    num_planes = kv_cache.shape[0] * kv_cache.shape[1]
    row = kv_cache.shape[4] * kv_cache.shape[5]
    plane_stride = kv_cache.stride(1)  # elements from one plane to the next
    if src_slots.numel() == 0:
        return
    block = min(1024, triton.next_power_of_2(row))
    _copy_slots_kernel[(src_slots.numel(), num_planes)](kv_cache, src_slots, dst_slots, plane_stride, row, block)
