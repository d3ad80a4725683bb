"""Fused elementwise kernels for the decode step, written in Triton: fewer, larger launches.

Why fuse
--------
At batch 1 a decode step moves little data per kernel, so its time goes to launching kernels,
not to moving bytes: every PyTorch operation is its own kernel, and between two GEMMs a layer
runs about twenty small ones (casts, a reduction, adds, chunks, concatenations, index copies),
each reading its input from memory and writing its output back. The kernels here do, in one
launch each, what the engine otherwise does in several:

  fused_add_rms_norm  residual add + RMSNorm     hidden = x + residual; weight * rms_norm(hidden)
  rms_norm            RMSNorm alone              (the first layer's input norm)
  rotary_and_store    RoPE + KV-cache write      rotate q and k, write k and v to the paged cache
  silu_and_mul        SwiGLU's activation        silu(gate) * up

Each reads its inputs once and writes its outputs once, and holds everything in between in
registers. They launch only (no host sync, no data-dependent shapes), so they can be captured
in a CUDA graph. Inputs are fp16, bf16 or fp32.

Same numbers as the PyTorch code they replace
---------------------------------------------
That code is minillama/ops/reference/ (rms_norm.py, rotary_and_store.py, silu_and_mul.py).
PyTorch computes a fp16/bf16 operation in fp32 and rounds the result to the input dtype, once per
operation. The kernels compute in fp32 too, and round to the dtype at the same points the
PyTorch expressions do, even where a single rounding at the end would be (slightly) more
accurate. So the engine's numbers change by at most an ulp or two when the kernels replace the
PyTorch code, and mostly not at all:

- the residual add is bit-identical (fp32 add, one rounding);
- RoPE and the cache write are bit-identical, in every dtype: x * cos and rotate_half(x) * sin
  are each rounded to the dtype and then added, as in `x * cos + cat(-x2, x1) * sin`. The kernel is compiled without fused
  multiply-adds (enable_fp_fusion=False): the compiler would otherwise merge a product and the
  sum into one fma, rounded once, which is more accurate but not what PyTorch computes;
- RMSNorm normalises in fp32, rounds to the dtype, then multiplies by the weight (Hugging Face's
  order). Only the sum of squares differs (another summation order, another rsqrt), by a few
  fp32 ulps; in fp16/bf16 that can move the rounded normalised value by one ulp of the dtype,
  which the weight multiply turns into at most 2 ulps of the output (in fp32: a few ulps);
- silu_and_mul rounds silu(gate) to the dtype, then multiplies by up: as F.silu(gate) * up.
  Its exp and division are the GPU's fast ones, a few fp32 ulps off PyTorch's, so again an
  fp16/bf16 output can be off by at most 2 ulps (an fp32 one by a few fp32 ulps).

Launch configurations
---------------------
RMSNorm: one program per row (token), the whole row in registers: the sum of squares needs the
full row before any output can be written, and a hidden size of a few thousand fits in one
program. Warps grow with the row: 4 up to 1024 elements, 8 up to 4096, 16 beyond, so each
thread holds at least 8 elements and loads them as 16-byte vectors. RoPE + store: one program per token, covering all of its q, k
and v heads as [heads, D / 2] tiles (the two halves that rotate_half pairs up). SiLU-and-mul:
a 2-D grid (token, column tile of 1024), so that even a single token's 8192-wide intermediate
row is spread over several SMs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from minillama.config import ModelConfig

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_MAX_NORM_BLOCK = 65536  # the widest row one RMSNorm program holds in registers
_SILU_BLOCK = 1024  # columns per SiLU-and-mul program


def takes(config: ModelConfig) -> bool:
    """Whether these kernels take a model of this shape (what their asserts require): the RoPE
    kernel's tl.arange spans head_dim, so a power of two; one RMSNorm program holds a row."""
    head_dim = config.head_dim
    return head_dim & (head_dim - 1) == 0 and triton.next_power_of_2(config.hidden_size) <= _MAX_NORM_BLOCK


# ----------------------------------------------------------------------------------------
# RMSNorm, with or without the residual add
# ----------------------------------------------------------------------------------------


@triton.jit
def _rms_norm_kernel(
    x_ptr,  # [N, hidden]
    residual_ptr,  # [N, hidden] (unused unless HAS_RESIDUAL)
    weight_ptr,  # [hidden]
    out_ptr,  # [N, hidden], the normalised rows, in weight * x's result dtype
    new_residual_ptr,  # [N, hidden], x + residual in x's dtype (unused unless HAS_RESIDUAL)
    n_cols,  # hidden
    eps,
    stride_x,
    stride_r,
    stride_o,
    stride_nr,
    HAS_RESIDUAL: tl.constexpr,
    BLOCK: tl.constexpr,  # hidden rounded up to a power of two
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols

    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)  # [BLOCK]
    if HAS_RESIDUAL:
        residual = tl.load(residual_ptr + row * stride_r + cols, mask=mask, other=0.0)
        # As PyTorch adds two fp16/bf16 tensors: in fp32, rounded once to the dtype.
        x = (x.to(tl.float32) + residual.to(tl.float32)).to(new_residual_ptr.dtype.element_ty)
        tl.store(new_residual_ptr + row * stride_nr + cols, x, mask=mask)

    # F.rms_norm(x.float()): x / sqrt(mean(x^2) + eps) in fp32 (padding columns hold 0).
    h = x.to(tl.float32)
    mean_square = tl.sum(h * h, axis=0) / n_cols
    normed = h * tl.rsqrt(mean_square + eps)
    # .to(x.dtype), then weight * normed in the result dtype (Hugging Face's order).
    normed = normed.to(x_ptr.dtype.element_ty).to(tl.float32)
    weight = tl.load(weight_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * stride_o + cols, (weight * normed).to(out_ptr.dtype.element_ty), mask=mask)


def _norm_num_warps(block: int) -> int:
    """4 warps up to 1024 columns, 8 up to 4096, 16 beyond: at least 8 elements per thread (16-byte
    vector loads in fp16/bf16) on rows of 1024 or more."""
    if block <= 1024:
        return 4
    return 8 if block <= 4096 else 16


def _launch_rms_norm(
    x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    hidden = x.shape[-1]
    assert x.dtype in _DTYPES and weight.dtype in _DTYPES, f"unsupported dtype {x.dtype} / {weight.dtype}"
    assert weight.shape == (hidden,) and weight.device == x.device
    block = triton.next_power_of_2(hidden)
    assert block <= _MAX_NORM_BLOCK, f"hidden size {hidden} is too wide for one program per row"

    rows = x.reshape(-1, hidden)  # [N, hidden]; a view for the engine's contiguous activations
    weight = weight.contiguous()
    # `weight * normed.to(x.dtype)` follows PyTorch's type promotion (x's dtype, unless the
    # weight is wider).
    out = torch.empty(rows.shape, dtype=torch.promote_types(x.dtype, weight.dtype), device=x.device)
    if residual is None:
        res_rows, new_residual = rows, None
        res_arg, new_res_arg = rows, out  # placeholders, never read or written
    else:
        assert residual.shape == x.shape and residual.dtype == x.dtype and residual.device == x.device
        res_rows = residual.reshape(-1, hidden)
        new_residual = torch.empty(rows.shape, dtype=x.dtype, device=x.device)
        res_arg, new_res_arg = res_rows, new_residual
    assert rows.stride(-1) == 1 and res_rows.stride(-1) == 1, "rows must be contiguous in the last dim"

    if rows.shape[0] > 0:
        _rms_norm_kernel[(rows.shape[0],)](
            rows, res_arg, weight, out, new_res_arg,
            hidden, eps,
            rows.stride(0), res_arg.stride(0), out.stride(0), new_res_arg.stride(0),
            HAS_RESIDUAL=residual is not None,
            BLOCK=block,
            num_warps=_norm_num_warps(block),
        )
    out = out.view(x.shape)
    return out, None if new_residual is None else new_residual.view(x.shape)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm of every row: weight * F.rms_norm(x.float(), (hidden,), eps=eps).to(x.dtype).

    x: [..., hidden] fp16/bf16/fp32, contiguous in its last dim; weight: [hidden].
    Returns a new tensor shaped like x, in x's dtype (or the weight's, if wider, as PyTorch's
    type promotion gives). One launch.
    """
    return _launch_rms_norm(x, None, weight, eps)[0]


def fused_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual add and the following RMSNorm, in one launch.

    x, residual: [..., hidden], same dtype (fp16/bf16/fp32); weight: [hidden].
    Returns (normed, new_residual), both new tensors shaped like x:
      new_residual = x + residual, in x's dtype (bit-identical to PyTorch's add);
      normed = weight * F.rms_norm(new_residual.float(), (hidden,), eps=eps).to(x.dtype).
    """
    normed, new_residual = _launch_rms_norm(x, residual, weight, eps)
    assert new_residual is not None
    return normed, new_residual


# ----------------------------------------------------------------------------------------
# RoPE on q and k, and the KV-cache write
# ----------------------------------------------------------------------------------------


@triton.jit
def _rotate_half(x1, x2, c1, c2, s1, s2, dtype: tl.constexpr):
    """(x1, x2) -> (x1 c1 - x2 s1, x2 c2 + x1 s2): x * cos + cat(-x2, x1) * sin, every product
    and the sum rounded to `dtype` as PyTorch rounds them. Inputs fp32, outputs in `dtype`."""
    a1 = (x1 * c1).to(dtype).to(tl.float32)
    b1 = (-x2 * s1).to(dtype).to(tl.float32)
    a2 = (x2 * c2).to(dtype).to(tl.float32)
    b2 = (x1 * s2).to(dtype).to(tl.float32)
    return (a1 + b1).to(dtype), (a2 + b2).to(dtype)


@triton.jit
def _rotary_store_kernel(
    qkv_ptr,  # [N, (H + 2 Hkv) * D]: each token's q heads, then k heads, then v heads
    cos_ptr,  # [N, D] (any leading view, e.g. [N, 1, D]), each half repeated
    sin_ptr,  # [N, D]
    slot_ptr,  # [N] int32/int64, flat cache row of each token; < 0: padding, not written
    q_out_ptr,  # [N, H, D]
    k_out_ptr,  # [N, Hkv, D], the rotated keys, written only with KEEP_K
    k_cache_ptr,  # [num_blocks, block_size, Hkv, D]
    v_cache_ptr,  # [num_blocks, block_size, Hkv, D]
    block_size,
    stride_t,  # qkv's token stride
    stride_cos,
    stride_sin,
    stride_qo,  # q_out's token stride
    stride_ko,  # k_out's token stride
    stride_kb,
    stride_kt,
    stride_kh,
    stride_vb,
    stride_vt,
    stride_vh,
    NUM_HEADS: tl.constexpr,
    NUM_KV_HEADS: tl.constexpr,
    HEADS_PAD: tl.constexpr,  # NUM_HEADS rounded up to a power of two
    KV_HEADS_PAD: tl.constexpr,  # NUM_KV_HEADS rounded up to a power of two
    HEAD_DIM: tl.constexpr,
    KEEP_K: tl.constexpr,  # also write the rotated keys to k_out (attention over fresh keys)
):
    HALF: tl.constexpr = HEAD_DIM // 2
    dtype = q_out_ptr.dtype.element_ty
    token = tl.program_id(0).to(tl.int64)
    offs_half = tl.arange(0, HALF)  # [D/2]
    offs_d = tl.arange(0, HEAD_DIM)  # [D]
    row = qkv_ptr + token * stride_t

    # The angles of this token's position, first and second half; [1, D/2] to broadcast over heads.
    c1 = tl.load(cos_ptr + token * stride_cos + offs_half).to(tl.float32)[None, :]
    c2 = tl.load(cos_ptr + token * stride_cos + HALF + offs_half).to(tl.float32)[None, :]
    s1 = tl.load(sin_ptr + token * stride_sin + offs_half).to(tl.float32)[None, :]
    s2 = tl.load(sin_ptr + token * stride_sin + HALF + offs_half).to(tl.float32)[None, :]

    # q: rotate all heads, write them to the contiguous output.
    head = tl.arange(0, HEADS_PAD)  # [HEADS_PAD]
    q_mask = (head < NUM_HEADS)[:, None]
    q_ptrs = row + head[:, None] * HEAD_DIM + offs_half[None, :]  # [HEADS_PAD, D/2], first halves
    q1 = tl.load(q_ptrs, mask=q_mask, other=0.0).to(tl.float32)
    q2 = tl.load(q_ptrs + HALF, mask=q_mask, other=0.0).to(tl.float32)
    q1, q2 = _rotate_half(q1, q2, c1, c2, s1, s2, dtype)
    out_ptrs = q_out_ptr + token * stride_qo + head[:, None] * HEAD_DIM + offs_half[None, :]
    tl.store(out_ptrs, q1, mask=q_mask)
    tl.store(out_ptrs + HALF, q2, mask=q_mask)

    # k and v: cache slot s is block s // block_size, row s % block_size; padding tokens skip.
    slot = tl.load(slot_ptr + token).to(tl.int64)
    block = slot // block_size
    offset = slot % block_size
    kv_head = tl.arange(0, KV_HEADS_PAD)  # [KV_HEADS_PAD]
    head_mask = (kv_head < NUM_KV_HEADS)[:, None]  # the row's heads: every token has them
    kv_mask = head_mask & (slot >= 0)  # ... and a cache slot to write them to
    k_ptrs = row + (NUM_HEADS + kv_head[:, None]) * HEAD_DIM + offs_half[None, :]  # [KV_HEADS_PAD, D/2]
    k1 = tl.load(k_ptrs, mask=head_mask, other=0.0).to(tl.float32)
    k2 = tl.load(k_ptrs + HALF, mask=head_mask, other=0.0).to(tl.float32)
    k1, k2 = _rotate_half(k1, k2, c1, c2, s1, s2, dtype)
    if KEEP_K:  # every token's keys, padding too, as the reference returns them
        k_out_ptrs = k_out_ptr + token * stride_ko + kv_head[:, None] * HEAD_DIM + offs_half[None, :]
        tl.store(k_out_ptrs, k1, mask=head_mask)
        tl.store(k_out_ptrs + HALF, k2, mask=head_mask)
    k_dst = k_cache_ptr + block * stride_kb + offset * stride_kt + kv_head[:, None] * stride_kh + offs_half[None, :]
    tl.store(k_dst, k1, mask=kv_mask)
    tl.store(k_dst + HALF, k2, mask=kv_mask)

    v_ptrs = row + (NUM_HEADS + NUM_KV_HEADS + kv_head[:, None]) * HEAD_DIM + offs_d[None, :]  # [KV_HEADS_PAD, D]
    v = tl.load(v_ptrs, mask=kv_mask, other=0.0)
    v_dst = v_cache_ptr + block * stride_vb + offset * stride_vt + kv_head[:, None] * stride_vh + offs_d[None, :]
    tl.store(v_dst, v, mask=kv_mask)


def rotary_and_store(
    qkv: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    keep_k: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """RoPE on q and k, and k, v written into the paged KV cache, in one launch.

    qkv: [N, (H + 2 Hkv) * D] (or [N, H + 2 Hkv, D]), the qkv projection's output: per token
    the H query heads, then the Hkv key heads, then the Hkv value heads.
    cos, sin: [N, 1, D] (or [N, D]) in qkv's dtype, each half repeated, as
    RotaryEmbedding.cos_sin returns them.
    k_cache, v_cache: [num_blocks, block_size, Hkv, D] in qkv's dtype, written in place.
    slot_mapping: [N] int64 (or int32), the flat cache row of each token (block * block_size +
    offset); tokens with a negative slot are padding: their k and v are not written.
    Returns q rotated, a new contiguous [N, H, D] tensor, and with keep_k the rotated keys as a
    new contiguous [N, Hkv, D] tensor (else None): a prefill step whose keys are all fresh
    attends over them there, not in the cache (model/llama.py).

    Does what these lines of reference/rotary_and_store.py do (apply_rotary, then store_kvcache):
        qk = apply_rotary(qkv_heads[:, : H + Hkv], cos, sin)    # x * cos + cat(-x2, x1) * sin
        q, k = qk.split([H, Hkv], dim=1); v = qkv_heads[:, H + Hkv :]
        store_kvcache(k, v, k_cache, v_cache, slot_mapping)
    with the same rounding (bit-identical in fp16/bf16; see the module docstring).
    """
    num_tokens = qkv.shape[0]
    assert qkv.dtype in _DTYPES, f"unsupported dtype {qkv.dtype}"
    qkv = qkv.reshape(num_tokens, (num_heads + 2 * num_kv_heads) * head_dim)  # a view of the projection
    assert qkv.stride(1) == 1
    assert head_dim >= 2 and head_dim & (head_dim - 1) == 0, "head_dim must be a power of two"
    cos, sin = cos.reshape(num_tokens, head_dim), sin.reshape(num_tokens, head_dim)  # views of [N, 1, D]
    assert cos.dtype == sin.dtype == qkv.dtype and cos.stride(1) == sin.stride(1) == 1
    assert k_cache.shape == v_cache.shape and k_cache.dtype == v_cache.dtype == qkv.dtype
    assert k_cache.dim() == 4 and k_cache.shape[2:] == (num_kv_heads, head_dim)
    assert k_cache.stride(3) == v_cache.stride(3) == 1
    assert slot_mapping.shape == (num_tokens,) and slot_mapping.dtype in (torch.int32, torch.int64)

    q = torch.empty(num_tokens, num_heads, head_dim, dtype=qkv.dtype, device=qkv.device)
    k = torch.empty(num_tokens, num_kv_heads, head_dim, dtype=qkv.dtype, device=qkv.device) if keep_k else None
    if num_tokens == 0:
        return q, k
    heads_pad = triton.next_power_of_2(num_heads)
    k_out = k if k is not None else q  # not written without KEEP_K; any tensor fills the slot
    _rotary_store_kernel[(num_tokens,)](
        qkv, cos, sin, slot_mapping.contiguous(), q, k_out, k_cache, v_cache,
        k_cache.shape[1],
        qkv.stride(0), cos.stride(0), sin.stride(0), q.stride(0), k_out.stride(0),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        NUM_HEADS=num_heads,
        NUM_KV_HEADS=num_kv_heads,
        HEADS_PAD=heads_pad,
        KV_HEADS_PAD=triton.next_power_of_2(num_kv_heads),
        HEAD_DIM=head_dim,
        KEEP_K=keep_k,
        # [HEADS_PAD, D/2] tiles: 4 warps hold up to 2048 elements at 16 per thread.
        num_warps=4 if heads_pad * head_dim <= 4096 else 8,
        # No fused multiply-adds: the compiler would otherwise turn round(x * cos) + round(.. * sin)
        # into one fma with a single rounding (fma.rn.bf16x2 on an H100), which is not PyTorch's.
        enable_fp_fusion=False,
    )
    return q, k


# ----------------------------------------------------------------------------------------
# SwiGLU's activation
# ----------------------------------------------------------------------------------------


@triton.jit
def _silu_and_mul_kernel(
    gate_up_ptr,  # [N, 2 I]: gate in the first I columns, up in the last I
    out_ptr,  # [N, I]
    n_cols,  # I
    stride_in,
    stride_out,
    BLOCK: tl.constexpr,  # columns per program
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)  # [BLOCK]
    mask = cols < n_cols
    gate = tl.load(gate_up_ptr + row * stride_in + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(gate_up_ptr + row * stride_in + n_cols + cols, mask=mask, other=0.0).to(tl.float32)
    dtype = out_ptr.dtype.element_ty
    # F.silu(gate), rounded to the dtype as PyTorch does, then * up, rounded again.
    silu = (gate / (1.0 + tl.exp(-gate))).to(dtype).to(tl.float32)
    tl.store(out_ptr + row * stride_out + cols, (silu * up).to(dtype), mask=mask)


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """SwiGLU's activation: gate, up = gate_up.chunk(2, -1); F.silu(gate) * up, in one launch.

    gate_up: [..., 2 I] fp16/bf16/fp32, contiguous in its last dim (the stacked gate/up
    projection's output). Returns a new [..., I] tensor in gate_up's dtype.
    """
    assert gate_up.dtype in _DTYPES, f"unsupported dtype {gate_up.dtype}"
    assert gate_up.shape[-1] % 2 == 0
    inter = gate_up.shape[-1] // 2
    rows = gate_up.reshape(-1, 2 * inter)  # [N, 2 I]
    assert rows.stride(-1) == 1, "gate_up must be contiguous in its last dim"
    out = torch.empty(rows.shape[0], inter, dtype=gate_up.dtype, device=gate_up.device)  # [N, I]
    block = min(_SILU_BLOCK, triton.next_power_of_2(max(inter, 1)))
    if rows.shape[0] > 0 and inter > 0:
        _silu_and_mul_kernel[(rows.shape[0], triton.cdiv(inter, block))](
            rows, out, inter, rows.stride(0), out.stride(0), BLOCK=block, num_warps=4
        )
    return out.view(*gate_up.shape[:-1], inter)
