"""Attention over the paged KV cache, written in Triton: decode and varlen prefill.

Both functions have flash-attn's signatures and semantics (ops/reference/reference_attention.py
is the plain PyTorch definition they are tested against). Shapes: B sequences, H query heads, Hkv key/value
heads (H is a multiple of Hkv; query head h reads K/V head h // (H // Hkv)), D head dim.

The algorithm: online softmax (FlashAttention)
-----------------------------------------------
A program owns a tile of query rows and walks the keys in tiles of BLOCK_N. It never holds the
whole row of scores; instead it keeps, per query row, the running maximum m, the running sum
l = sum(exp(s - m)) and the running output acc = sum(exp(s - m) * v). When a new tile raises
the maximum from m to m', the old sums are rescaled by exp(m - m'). At the end out = acc / l.
Scores are computed in fp32 from fp16/bf16 operands; exponentials are base 2, with the softmax
scale multiplied by log2(e) once, since exp2 is the GPU's native instruction.

K and V are read in place from the paged cache: token j of sequence b lives in physical block
block_table[b, j // block_size] at offset j % block_size, so every key row's address is
computed from the block table (no gather copy). Rows past a sequence's length are masked, so
padding entries of the block table are never read into the result.

Decode: split-K (flash-decoding)
--------------------------------
In decode each sequence has a single query per head, so there is little work per sequence:
one program per (sequence, KV head) gives only B * Hkv programs, which leaves most of an
H100's 132 SMs idle when B is small. So the context of each sequence is cut into num_splits
chunks, each handled by its own program; each writes its partial output, already normalised,
and its log-sum-exp lse = m + log2(l). A second small kernel merges the splits:
out = sum_s 2^(lse_s - max lse) * o_s / sum_s 2^(lse_s - max lse).
num_splits depends on shapes only (never on cache_seqlens' values), so the launch can be
captured in a CUDA graph; each program finds its own chunk from its sequence's length. With
one split the first kernel writes the final output directly. It is also the same for an eager
step and the graph its batch pads into, so both compute the same bits (_decode_num_splits).

A decode program loads all query heads that share its KV head (a GQA group, padded to at
least 16 rows for the tensor cores), so every K/V tile is read from memory once per group.

On Hopper and newer GPUs the decode reads each tile of keys and values with a TMA copy: the
tensor memory accelerator fetches a [BLOCK_N, D] box of the cache into shared memory from one
instruction, where pointer loads have every thread compute and issue addresses. A one-warp
program then only does the arithmetic, so an SM holds many of them and keeps more copies in
flight: on an H200 the decode reads the K/V 1.05-1.4x faster than with pointer loads
(docs/perf-notes.md, stop 30). A copy takes the whole box, so the last, partial tile of a
sequence masks what it read past the end; all the tiles before it run without masks.

Prefill: one launch for the ragged batch
----------------------------------------
The grid is (query tiles of the longest sequence, H, B); programs past their sequence's end
return at once. Causal masking is bottom-right aligned: query row i of a sequence with Lq new
tokens and Lk keys (the cached prefix first) sees keys 0 .. i + (Lk - Lq). Key tiles that all
rows of a program see in full are processed without masks; only the tiles that cross the
diagonal or the sequence's end pay for masking, and tiles past the diagonal are skipped.

Only fp16 and bf16 inputs are supported. Tile sizes were picked by sweeps on an H100, those for
head_dim 128 and the TMA decode's on an H200.
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

try:  # host-side TMA descriptors (Triton >= 3.3); without them decode uses pointer loads only
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - older Triton
    TensorDescriptor = None

# Decode programs to aim for, per SM, when a sequence's context is split: the pointer kernel's
# programs are 4 warps, the TMA kernel's one, so an SM holds more of those.
_DECODE_PROGRAMS_PER_SM = 2
_DECODE_TMA_PROGRAMS_PER_SM = 8
_MAX_SPLITS = 32  # a batch of 1-4 gains nothing past it: splits of one or two tiles
_H100_SMS = 132  # SM count assumed for non-CUDA tensors (Triton's CPU interpreter)


# ----------------------------------------------------------------------------------------
# Decode
# ----------------------------------------------------------------------------------------


# Triton compiles a kernel again for every new "specialisation" of its integer arguments: a
# value of 1, or one divisible by 16, gets code of its own. The block tables' width, the split
# count and the strides that follow it change from step to step, so each new combination used
# to compile mid-run (1.2 s in one prefill step of the 3B shape on a fresh machine): those
# arguments are not specialised. They only index a few scalar loads and stores, which gain
# nothing from the divisibility hint.
@triton.jit(do_not_specialize=["num_splits", "stride_bt", "stride_ob", "stride_lb", "stride_lh"])
def _decode_kernel(
    q_ptr,  # [B, 1, H, D]
    k_cache_ptr,  # [num_blocks, block_size, Hkv, D]
    v_cache_ptr,  # [num_blocks, block_size, Hkv, D]
    seqlens_ptr,  # [B] int32
    block_table_ptr,  # [B, max_blocks] int32
    out_ptr,  # [B, 1, H, D] when SINGLE_SPLIT, else the partial outputs [B, H, num_splits, D] fp32
    lse_ptr,  # [B, H, num_splits] fp32 (unused when SINGLE_SPLIT)
    scale_log2,  # softmax_scale * log2(e)
    num_splits,
    stride_qb,
    stride_qh,
    stride_kb,
    stride_kt,
    stride_kh,
    stride_vb,
    stride_vt,
    stride_vh,
    stride_bt,
    stride_ob,
    stride_oh,
    stride_os,  # partial outputs' split stride
    stride_lb,
    stride_lh,
    GROUP: tl.constexpr,  # query heads per KV head, H // Hkv
    GROUP_PAD: tl.constexpr,  # GROUP rounded up to a power of two >= 16 (tl.dot's minimum)
    HEAD_DIM: tl.constexpr,
    PAGE_SIZE: tl.constexpr,  # the cache's block_size
    BLOCK_N: tl.constexpr,  # keys per tile
    SINGLE_SPLIT: tl.constexpr,
):
    split = tl.program_id(0)
    kv_head = tl.program_id(1)
    seq = tl.program_id(2)
    start, end, q, head, head_mask, offs_d = _decode_program_start(
        q_ptr, seqlens_ptr, seq, split, kv_head, num_splits, stride_qb, stride_qh, GROUP, GROUP_PAD, HEAD_DIM, BLOCK_N
    )
    m_i = tl.full([GROUP_PAD], float("-inf"), dtype=tl.float32)  # running max (base-2 scores)
    l_i = tl.zeros([GROUP_PAD], dtype=tl.float32)  # running sum of exp2(score - m_i)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM], dtype=tl.float32)  # running sum of exp2(...) * v

    for tile_start in range(start, end, BLOCK_N):
        offs_n = tile_start + tl.arange(0, BLOCK_N)  # [BLOCK_N] token positions
        n_mask = offs_n < end
        page = tl.load(block_table_ptr + seq * stride_bt + offs_n // PAGE_SIZE, mask=n_mask, other=0)
        page = page.to(tl.int64)  # the cache can hold more than 2**31 elements
        slot = offs_n % PAGE_SIZE
        k = tl.load(
            k_cache_ptr + page[:, None] * stride_kb + slot[:, None] * stride_kt
            + kv_head * stride_kh + offs_d[None, :],
            mask=n_mask[:, None],
            other=0.0,
        )  # [BLOCK_N, D]
        v = tl.load(
            v_cache_ptr + page[:, None] * stride_vb + slot[:, None] * stride_vt
            + kv_head * stride_vh + offs_d[None, :],
            mask=n_mask[:, None],
            other=0.0,
        )  # [BLOCK_N, D]
        m_i, l_i, acc = _online_softmax_tile(q, k, v, n_mask, m_i, l_i, acc, scale_log2, MASKED=True)

    _store_decode_output(
        acc, l_i, m_i, out_ptr, lse_ptr, seq, head, head_mask, offs_d, split,
        stride_ob, stride_oh, stride_os, stride_lb, stride_lh, SINGLE_SPLIT,
    )


@triton.jit
def _decode_program_start(
    q_ptr, seqlens_ptr, seq, split, kv_head, num_splits, stride_qb, stride_qh,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """What a decode program (split, kv_head, seq) works on: its chunk [start, end) of the
    sequence's keys (whole tiles, spread evenly over the splits) and its GQA group's queries
    q [GROUP_PAD, D] (rows past GROUP are zeros: head_mask)."""
    seqlen = tl.load(seqlens_ptr + seq)
    tiles_per_split = tl.cdiv(tl.cdiv(seqlen, BLOCK_N), num_splits)
    start = split * tiles_per_split * BLOCK_N
    end = tl.minimum(start + tiles_per_split * BLOCK_N, seqlen)
    offs_g = tl.arange(0, GROUP_PAD)  # [GROUP_PAD] query head within the group
    offs_d = tl.arange(0, HEAD_DIM)  # [D]
    head = kv_head * GROUP + offs_g
    head_mask = offs_g < GROUP
    q = tl.load(
        q_ptr + seq * stride_qb + head[:, None] * stride_qh + offs_d[None, :],
        mask=head_mask[:, None],
        other=0.0,
    )
    return start, end, q, head, head_mask, offs_d


@triton.jit
def _online_softmax_tile(q, k, v, n_mask, m_i, l_i, acc, scale_log2, MASKED: tl.constexpr):
    """One tile of keys folded into the running softmax: q [GROUP_PAD, D], k and v [BLOCK_N, D],
    n_mask [BLOCK_N] the valid keys (at least one; all when not MASKED, when it goes unused).
    -> the new (m_i, l_i, acc)."""
    scores = tl.dot(q, tl.trans(k)) * scale_log2  # [GROUP_PAD, BLOCK_N] fp32
    if MASKED:
        scores = tl.where(n_mask[None, :], scores, float("-inf"))
    # Every tile holds at least one valid key, so m_new is finite.
    m_new = tl.maximum(m_i, tl.max(scores, axis=1))
    p = tl.exp2(scores - m_new[:, None])
    alpha = tl.exp2(m_i - m_new)  # rescales what was summed under the old maximum
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return m_new, l_i, acc


@triton.jit
def _store_decode_output(
    acc, l_i, m_i, out_ptr, lse_ptr, seq, head, head_mask, offs_d, split,
    stride_ob, stride_oh, stride_os, stride_lb, stride_lh, SINGLE_SPLIT: tl.constexpr,
):
    """A decode program's result: the output itself with one split, else this split's
    normalised partial output and its log2-sum-exp2 for the merge kernel."""
    # An empty split (or cache_seqlens == 0) has l_i == 0: it outputs zeros with lse = -inf.
    out = acc / tl.where(l_i > 0.0, l_i, 1.0)[:, None]
    if SINGLE_SPLIT:
        tl.store(
            out_ptr + seq * stride_ob + head[:, None] * stride_oh + offs_d[None, :],
            out.to(out_ptr.dtype.element_ty),
            mask=head_mask[:, None],
        )
    else:
        tl.store(
            out_ptr + seq * stride_ob + head[:, None] * stride_oh + split * stride_os + offs_d[None, :],
            out,
            mask=head_mask[:, None],
        )
        tl.store(lse_ptr + seq * stride_lb + head * stride_lh + split, m_i + tl.log2(l_i), mask=head_mask)


@triton.jit(do_not_specialize=["num_splits", "stride_bt", "stride_ob", "stride_lb", "stride_lh"])  # see _decode_kernel
def _decode_tma_kernel(
    q_ptr,  # [B, 1, H, D]
    k_desc,  # TMA descriptor of the K cache seen as [num_blocks * block_size, Hkv * D], box [BLOCK_N, D]
    v_desc,  # the same over the V cache
    seqlens_ptr,  # [B] int32
    block_table_ptr,  # [B, max_blocks] int32
    out_ptr,  # as in _decode_kernel
    lse_ptr,
    scale_log2,
    num_splits,
    stride_qb,
    stride_qh,
    stride_bt,
    stride_ob,
    stride_oh,
    stride_os,
    stride_lb,
    stride_lh,
    GROUP: tl.constexpr,
    GROUP_PAD: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    PAGE_SIZE: tl.constexpr,
    BLOCK_N: tl.constexpr,  # keys per tile: a divisor of PAGE_SIZE, so a tile never leaves its page
    SINGLE_SPLIT: tl.constexpr,
):
    """_decode_kernel with each tile of keys fetched by one TMA copy (Hopper's tensor memory
    accelerator) instead of BLOCK_N x D addresses computed by the threads: a copy needs only
    the tile's first row and the KV head's column (_tma_load_tile)."""
    split = tl.program_id(0)
    kv_head = tl.program_id(1)
    seq = tl.program_id(2)
    start, end, q, head, head_mask, offs_d = _decode_program_start(
        q_ptr, seqlens_ptr, seq, split, kv_head, num_splits, stride_qb, stride_qh, GROUP, GROUP_PAD, HEAD_DIM, BLOCK_N
    )
    m_i = tl.full([GROUP_PAD], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([GROUP_PAD], dtype=tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM], dtype=tl.float32)
    # Whole tiles first, without masks; then the sequence's last tile if it is partial.
    full_end = start + tl.maximum(end - start, 0) // BLOCK_N * BLOCK_N
    for tile_start in range(start, full_end, BLOCK_N):
        k, v = _tma_load_tile(k_desc, v_desc, block_table_ptr, seq, stride_bt, tile_start, kv_head, PAGE_SIZE, HEAD_DIM)
        m_i, l_i, acc = _online_softmax_tile(q, k, v, None, m_i, l_i, acc, scale_log2, MASKED=False)
    if full_end < end:
        k, v = _tma_load_tile(k_desc, v_desc, block_table_ptr, seq, stride_bt, full_end, kv_head, PAGE_SIZE, HEAD_DIM)
        # The copy takes whole tiles: slots past `end` (unwritten, or a freed sequence's) come
        # too. Their scores are masked; their values are zeroed, since a NaN left there times
        # its zero weight would still be NaN.
        n_mask = full_end + tl.arange(0, BLOCK_N) < end
        v = tl.where(n_mask[:, None], v, 0.0)
        m_i, l_i, acc = _online_softmax_tile(q, k, v, n_mask, m_i, l_i, acc, scale_log2, MASKED=True)

    _store_decode_output(
        acc, l_i, m_i, out_ptr, lse_ptr, seq, head, head_mask, offs_d, split,
        stride_ob, stride_oh, stride_os, stride_lb, stride_lh, SINGLE_SPLIT,
    )


@triton.jit
def _tma_load_tile(
    k_desc, v_desc, block_table_ptr, seq, stride_bt, tile_start, kv_head,
    PAGE_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr,
):
    """The keys and values [BLOCK_N, D] of tile_start .. tile_start + BLOCK_N - 1, one copy each:
    they lie in one page, at rows page * PAGE_SIZE + slot of the cache seen as a matrix."""
    page = tl.load(block_table_ptr + seq * stride_bt + tile_start // PAGE_SIZE)
    row = page * PAGE_SIZE + tile_start % PAGE_SIZE  # int32: _tma_available checks the rows fit
    return k_desc.load([row, kv_head * HEAD_DIM]), v_desc.load([row, kv_head * HEAD_DIM])


@triton.jit(do_not_specialize=["num_splits", "stride_pb", "stride_ph", "stride_lb", "stride_lh"])  # see _decode_kernel
def _decode_merge_kernel(
    part_ptr,  # [B, H, num_splits, D] fp32, each split's normalised output
    lse_ptr,  # [B, H, num_splits] fp32, each split's log2-sum-exp2
    out_ptr,  # [B, 1, H, D]
    num_splits,
    stride_pb,
    stride_ph,
    stride_ps,
    stride_lb,
    stride_lh,
    stride_ob,
    stride_oh,
    HEAD_DIM: tl.constexpr,
    SPLITS_PAD: tl.constexpr,  # num_splits rounded up to a power of two
):
    head = tl.program_id(0)
    seq = tl.program_id(1)
    offs_s = tl.arange(0, SPLITS_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    s_mask = offs_s < num_splits

    lse = tl.load(lse_ptr + seq * stride_lb + head * stride_lh + offs_s, mask=s_mask, other=float("-inf"))
    lse_max = tl.max(lse, axis=0)
    lse_max = tl.where(lse_max == float("-inf"), 0.0, lse_max)  # all splits empty: avoid -inf - -inf
    weight = tl.exp2(lse - lse_max)  # [SPLITS_PAD], 0 for empty splits
    part = tl.load(
        part_ptr + seq * stride_pb + head * stride_ph + offs_s[:, None] * stride_ps + offs_d[None, :],
        mask=s_mask[:, None],
        other=0.0,
    )  # [SPLITS_PAD, D]
    total = tl.maximum(tl.sum(weight, axis=0), 1e-30)
    out = tl.sum(part * weight[:, None], axis=0) / total  # [D]
    tl.store(out_ptr + seq * stride_ob + head * stride_oh + offs_d, out.to(out_ptr.dtype.element_ty))


@functools.cache
def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return _H100_SMS
    return torch.cuda.get_device_properties(device).multi_processor_count


def _decode_config(head_dim: int, tma: bool) -> dict[str, int]:
    """Tile size and launch settings of the decode kernels: the fastest of sweeps on an H200 at
    batch 1 to 256 over contexts of 260-1180 tokens (docs/perf-notes.md, stops 29 and 30). The
    TMA kernel's tiles are 16 keys (one page of the default cache) in a one-warp program: the
    copy engine does the loads, so the warp only does the arithmetic, and many small programs
    keep more copies in flight than a few large ones."""
    if tma:
        return {"BLOCK_N": 16, "num_warps": 1, "num_stages": 6}
    if head_dim > 64:
        return {"BLOCK_N": 64, "num_warps": 4, "num_stages": 2}
    return {"BLOCK_N": 128, "num_warps": 4, "num_stages": 3}


def _decode_num_splits(batch: int, num_kv_heads: int, device: torch.device, programs_per_sm: int) -> int:
    """How many chunks to cut each sequence's context into, from shapes alone.

    As many as fit the batch's programs (B x Hkv) into `programs_per_sm` per SM, at least one:
    fewer programs leave SMs idle, more only add to the merge. Where a split boundary falls
    changes the rounding, so the count depends on nothing that differs between an eager step
    and a CUDA-graph replay of the same sequences: B is rounded up to a power of two (every
    power of two is a graph's batch size, so a batch and the graph it pads into round alike),
    and the block table's width (a graph's is the widest) is not used; splits past the end of a
    short context are empty and add exact zeros in the merge.
    """
    programs = triton.next_power_of_2(batch) * num_kv_heads
    wanted = programs_per_sm * _num_sms(device) // programs
    return max(1, min(wanted, _MAX_SPLITS))


def _tma_available(k_cache: torch.Tensor, v_cache: torch.Tensor) -> bool:
    """Whether the caches can be read by TMA copies: a Hopper (or newer) GPU, each cache one
    dense [num_blocks, block_size, Hkv, D] tensor, and its rows numbered within int32 (the
    copies' coordinates)."""
    return (
        TensorDescriptor is not None
        and k_cache.is_cuda
        and torch.cuda.get_device_capability(k_cache.device)[0] >= 9
        and k_cache.is_contiguous()
        and v_cache.is_contiguous()
        and k_cache.shape[0] * k_cache.shape[1] < 2**31
    )


def _cache_descriptor(cache: torch.Tensor, block_n: int) -> TensorDescriptor:
    """A TMA descriptor over the cache seen as a matrix of rows (block, slot) and columns
    (KV head, dim), copying boxes of [block_n, D]: one KV head's keys of block_n slots."""
    num_blocks, block_size, num_kv_heads, head_dim = cache.shape
    matrix = cache.view(num_blocks * block_size, num_kv_heads * head_dim)
    return TensorDescriptor.from_tensor(matrix, [block_n, head_dim])


def flash_attn_with_kvcache(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cache_seqlens: torch.Tensor,
    block_table: torch.Tensor,
    softmax_scale: float | None = None,
    causal: bool = True,
    num_splits: int = 0,
    tma: bool | None = None,
) -> torch.Tensor:
    """Decode attention of one new token per sequence over the paged KV cache.

    q: [B, 1, H, D], the newest token of each sequence, whose K/V is already in the cache.
    k_cache, v_cache: [num_blocks, block_size, Hkv, D].
    cache_seqlens: [B] int32, valid tokens in the cache per sequence (the new one included);
    a sequence with 0 gets an all-zero output.
    block_table: [B, max_blocks] int32, logical -> physical block of each sequence.
    causal: accepted for flash-attn compatibility; the query is the last position, so
    causal and non-causal attention are the same here.
    num_splits: chunks per sequence's context; 0 picks it from the shapes (as flash-attn does).
    tma: read K/V with TMA copies (_decode_tma_kernel); None: wherever the GPU and the cache
    allow it (_tma_available). Tests force either kernel.
    Returns [B, 1, H, D] in q's dtype. Launches only; no host sync, so it is graph-capturable.
    """
    batch, q_len, num_heads, head_dim = q.shape
    num_blocks, page_size, num_kv_heads, _ = k_cache.shape
    assert q_len == 1, "decode takes one query token per sequence"
    assert q.dtype in (torch.float16, torch.bfloat16) and k_cache.dtype == v_cache.dtype == q.dtype
    assert v_cache.shape == k_cache.shape and k_cache.shape[-1] == head_dim
    assert num_heads % num_kv_heads == 0
    assert head_dim >= 16 and head_dim & (head_dim - 1) == 0, "head_dim must be a power of two"
    assert page_size >= 16 and page_size & (page_size - 1) == 0, "block_size must be a power of two >= 16"
    assert q.stride(-1) == k_cache.stride(-1) == v_cache.stride(-1) == 1
    assert cache_seqlens.dtype == block_table.dtype == torch.int32 and block_table.stride(1) == 1
    assert cache_seqlens.shape == (batch,) and block_table.shape[0] == batch

    scale = softmax_scale if softmax_scale is not None else head_dim**-0.5
    group = num_heads // num_kv_heads
    if tma is None:
        tma = _tma_available(k_cache, v_cache)
    if num_splits <= 0:
        programs_per_sm = _DECODE_TMA_PROGRAMS_PER_SM if tma else _DECODE_PROGRAMS_PER_SM
        num_splits = _decode_num_splits(batch, num_kv_heads, q.device, programs_per_sm)

    out = torch.empty_like(q, memory_format=torch.contiguous_format)  # [B, 1, H, D]
    if num_splits == 1:
        part, lse = out, out  # the kernel writes the final output; lse is unused
        part_strides = (out.stride(0), out.stride(2), 0)
        lse_strides = (0, 0)
    else:
        part = torch.empty(batch, num_heads, num_splits, head_dim, dtype=torch.float32, device=q.device)
        lse = torch.empty(batch, num_heads, num_splits, dtype=torch.float32, device=q.device)
        part_strides = (part.stride(0), part.stride(1), part.stride(2))
        lse_strides = (lse.stride(0), lse.stride(1))

    grid = (num_splits, num_kv_heads, batch)
    common = dict(
        GROUP=group,
        GROUP_PAD=max(16, triton.next_power_of_2(group)),
        HEAD_DIM=head_dim,
        PAGE_SIZE=page_size,
        SINGLE_SPLIT=num_splits == 1,
        **_decode_config(head_dim, tma),
    )
    if tma:
        block_n = common["BLOCK_N"]
        _decode_tma_kernel[grid](
            q, _cache_descriptor(k_cache, block_n), _cache_descriptor(v_cache, block_n),
            cache_seqlens, block_table, part, lse,
            scale * math.log2(math.e), num_splits,
            q.stride(0), q.stride(2),
            block_table.stride(0),
            *part_strides, *lse_strides,
            **common,
        )
    else:
        _decode_kernel[grid](
            q, k_cache, v_cache, cache_seqlens, block_table, part, lse,
            scale * math.log2(math.e), num_splits,
            q.stride(0), q.stride(2),
            k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
            v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
            block_table.stride(0),
            *part_strides, *lse_strides,
            **common,
        )
    if num_splits > 1:
        _decode_merge_kernel[(num_heads, batch)](
            part, lse, out, num_splits,
            *part_strides, *lse_strides,
            out.stride(0), out.stride(2),
            HEAD_DIM=head_dim,
            SPLITS_PAD=triton.next_power_of_2(num_splits),
            num_warps=4,
        )
    return out


# ----------------------------------------------------------------------------------------
# Prefill
# ----------------------------------------------------------------------------------------


@triton.jit(do_not_specialize=["stride_bt"])  # the block tables' width: see _decode_kernel
def _prefill_kernel(
    q_ptr,  # [total_q, H, D]
    k_ptr,  # [total_k, Hkv, D], or the paged cache [num_blocks, block_size, Hkv, D] when PAGED
    v_ptr,  # like k_ptr
    out_ptr,  # [total_q, H, D]
    cu_seqlens_q_ptr,  # [B + 1] int32
    cu_seqlens_k_ptr,  # [B + 1] int32
    block_table_ptr,  # [B, max_blocks] int32 (unused unless PAGED)
    scale_log2,  # softmax_scale * log2(e)
    stride_qt,
    stride_qh,
    stride_kb,  # block stride (PAGED only)
    stride_kt,  # token stride: within a block when PAGED, else between rows of k
    stride_kh,
    stride_vb,
    stride_vt,
    stride_vh,
    stride_bt,
    stride_ot,
    stride_oh,
    GROUP: tl.constexpr,  # query heads per KV head
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,  # query rows per program
    BLOCK_N: tl.constexpr,  # keys per tile
    CAUSAL: tl.constexpr,
    PAGED: tl.constexpr,
    PAGE_SIZE: tl.constexpr,
):
    m_tile = tl.program_id(0)
    head = tl.program_id(1)
    seq = tl.program_id(2)
    kv_head = head // GROUP

    q_start = tl.load(cu_seqlens_q_ptr + seq)
    q_len = tl.load(cu_seqlens_q_ptr + seq + 1) - q_start
    if m_tile * BLOCK_M >= q_len:  # the grid is sized for the longest sequence
        return
    k_start = tl.load(cu_seqlens_k_ptr + seq)
    k_len = tl.load(cu_seqlens_k_ptr + seq + 1) - k_start
    causal_offset = k_len - q_len  # query row i sits at key position i + causal_offset

    offs_m = m_tile * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M] query rows in the sequence
    offs_d = tl.arange(0, HEAD_DIM)
    m_mask = offs_m < q_len
    q_rows = (q_start + offs_m).to(tl.int64)
    q = tl.load(
        q_ptr + q_rows[:, None] * stride_qt + head * stride_qh + offs_d[None, :],
        mask=m_mask[:, None],
        other=0.0,
    )  # [BLOCK_M, D]

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    # The keys fall into three ranges. [0, full_end): whole tiles that every row of this tile
    # sees, handled without masks. [full_end, k_end): tiles that need the causal and length
    # masks. [k_end, k_len): past the last row's causal limit, skipped.
    if CAUSAL:
        k_end = tl.minimum(k_len, (m_tile + 1) * BLOCK_M + causal_offset)
        full_end = tl.minimum(k_len, m_tile * BLOCK_M + causal_offset + 1) // BLOCK_N * BLOCK_N
    else:
        k_end = k_len
        full_end = k_len // BLOCK_N * BLOCK_N
    for masked in tl.static_range(2):  # unrolled: the same loop body, without then with masks
        lo = full_end if masked else 0
        hi = k_end if masked else full_end
        for tile_start in range(lo, hi, BLOCK_N):
            offs_n = tile_start + tl.arange(0, BLOCK_N)  # [BLOCK_N] key positions
            n_mask = offs_n < hi
            if PAGED:
                page = tl.load(block_table_ptr + seq * stride_bt + offs_n // PAGE_SIZE, mask=n_mask, other=0)
                k_off = page.to(tl.int64) * stride_kb + (offs_n % PAGE_SIZE) * stride_kt
                v_off = page.to(tl.int64) * stride_vb + (offs_n % PAGE_SIZE) * stride_vt
            else:
                k_rows = (k_start + offs_n).to(tl.int64)
                k_off = k_rows * stride_kt
                v_off = k_rows * stride_vt
            k_ptrs = k_ptr + k_off[:, None] + kv_head * stride_kh + offs_d[None, :]  # [BLOCK_N, D]
            v_ptrs = v_ptr + v_off[:, None] + kv_head * stride_vh + offs_d[None, :]
            if masked:
                k = tl.load(k_ptrs, mask=n_mask[:, None], other=0.0)
                v = tl.load(v_ptrs, mask=n_mask[:, None], other=0.0)
            else:
                k = tl.load(k_ptrs)
                v = tl.load(v_ptrs)

            scores = tl.dot(q, tl.trans(k)) * scale_log2  # [BLOCK_M, BLOCK_N] fp32
            if masked:
                allowed = n_mask[None, :]
                if CAUSAL:
                    allowed = allowed & (offs_n[None, :] <= offs_m[:, None] + causal_offset)
                scores = tl.where(allowed, scores, float("-inf"))
            # Key 0 is seen by every row and comes first, so m_new is finite.
            m_new = tl.maximum(m_i, tl.max(scores, axis=1))
            p = tl.exp2(scores - m_new[:, None])
            alpha = tl.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new

    out = acc / l_i[:, None]
    tl.store(
        out_ptr + q_rows[:, None] * stride_ot + head * stride_oh + offs_d[None, :],
        out.to(out_ptr.dtype.element_ty),
        mask=m_mask[:, None],
    )


def _prefill_config(head_dim: int) -> dict[str, int]:
    """Tile sizes and launch settings of the prefill kernel: the fastest of a sweep on an H200
    over a 16k-token step of 100-1024-token prompts (docs/perf-notes.md, stop 29)."""
    if head_dim > 64:
        return {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 3}
    return {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3}


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
    """Prefill attention over a ragged batch, in one launch.

    q: [total_q, H, D], the new tokens of all B sequences end to end.
    k, v: [total_k, Hkv, D] laid out like q; or, with block_table ([B, max_blocks] int32), the
    paged caches [num_blocks, block_size, Hkv, D], sequence b's keys being its first
    cu_seqlens_k[b + 1] - cu_seqlens_k[b] tokens read through block_table[b].
    cu_seqlens_q, cu_seqlens_k: [B + 1] int32 prefix sums of the query and key lengths
    (keys >= queries per sequence: a cached prefix may precede the new tokens).
    max_seqlen_q: the longest query length (a Python int) sizes the grid; max_seqlen_k is
    accepted for flash-attn compatibility.
    Returns [total_q, H, D] in q's dtype.
    """
    total_q, num_heads, head_dim = q.shape
    num_kv_heads = k.shape[-2]
    assert q.dtype in (torch.float16, torch.bfloat16) and k.dtype == v.dtype == q.dtype
    assert k.shape == v.shape and k.shape[-1] == head_dim and num_heads % num_kv_heads == 0
    assert head_dim >= 16 and head_dim & (head_dim - 1) == 0, "head_dim must be a power of two"
    assert q.stride(-1) == k.stride(-1) == v.stride(-1) == 1
    assert cu_seqlens_q.dtype == cu_seqlens_k.dtype == torch.int32
    assert cu_seqlens_q.is_contiguous() and cu_seqlens_k.is_contiguous()
    batch = cu_seqlens_q.numel() - 1

    paged = block_table is not None
    if paged:
        assert k.dim() == 4, "with a block_table, k and v are the paged caches"
        page_size = k.shape[1]
        assert page_size >= 16 and page_size & (page_size - 1) == 0, "block_size must be a power of two >= 16"
        assert block_table.dtype == torch.int32 and block_table.stride(1) == 1
        assert block_table.shape[0] == batch
        k_strides = (k.stride(0), k.stride(1), k.stride(2))
        v_strides = (v.stride(0), v.stride(1), v.stride(2))
        bt, bt_stride = block_table, block_table.stride(0)
    else:
        assert k.dim() == 3
        page_size = 16  # unused
        k_strides = (0, k.stride(0), k.stride(1))
        v_strides = (0, v.stride(0), v.stride(1))
        bt, bt_stride = cu_seqlens_k, 0  # unused

    scale = softmax_scale if softmax_scale is not None else head_dim**-0.5
    config = _prefill_config(head_dim)

    out = torch.empty_like(q, memory_format=torch.contiguous_format)  # [total_q, H, D]
    if total_q == 0 or max_seqlen_q == 0:
        return out
    grid = (triton.cdiv(max_seqlen_q, config["BLOCK_M"]), num_heads, batch)
    _prefill_kernel[grid](
        q, k, v, out, cu_seqlens_q, cu_seqlens_k, bt,
        scale * math.log2(math.e),
        q.stride(0), q.stride(1),
        *k_strides, *v_strides,
        bt_stride,
        out.stride(0), out.stride(1),
        GROUP=num_heads // num_kv_heads,
        HEAD_DIM=head_dim,
        CAUSAL=causal,
        PAGED=paged,
        PAGE_SIZE=page_size,
        **config,
    )
    return out
