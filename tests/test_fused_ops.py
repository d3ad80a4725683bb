"""The fused Triton kernels (minillama/ops/triton/fused_ops.py) against the PyTorch code they replace.

The CUDA tests need a GPU and Triton:  pytest -m cuda tests/test_fused_ops.py
The interpreter test runs the same kernels on the CPU through Triton's interpreter, on small
shapes; conftest.py turns it on where there is no GPU:  pytest tests/test_fused_ops.py -k interpreter
Inputs are fresh random every run (no fixed seed): the kernels must be right on any input.

Tolerances, and why
-------------------
The references below are the engine's PyTorch expressions, verbatim. A PyTorch fp16/bf16 op
computes in fp32 and rounds to the dtype once; the kernels round at the same points (see the
module docstring of fused_ops.py). So:
- the residual add, RoPE and the KV-cache write are bit-identical, in every dtype: asserted
  exactly (torch.equal). RoPE is compiled without fused multiply-adds for this.
- RMSNorm and silu_and_mul differ from PyTorch only by a few fp32 ulps in an intermediate (the
  sum of squares' order and rsqrt; the GPU's fast exp and division). In fp16/bf16 that can flip
  the rounding of the intermediate to the dtype by one ulp, and the multiply that follows (by
  the weight, by `up`) carries that into less than 2 ulps of the exact product, which rounds to
  at most 2 ulps of the output. So every element must be within 2 ulps of the dtype at its own
  magnitude (stricter than 2 ulps of the output's largest magnitude). In fp32 those few ulps
  stay far below the asserted max |out - ref| <= 1e-5 * max |ref|.
"""

from __future__ import annotations

import pytest
import torch
from triton_support import capture_graph, requires_cuda, requires_interpreter

from minillama.ops.reference.rms_norm import add_rms_norm, rms_norm
from minillama.ops.reference.rotary_and_store import apply_rotary, store_kvcache
from minillama.ops.reference.silu_and_mul import silu_and_mul

DTYPES = [torch.bfloat16, torch.float16, torch.float32]
NUM_TOKENS = [1, 7, 256]
# (H, Hkv, D): Llama-3.2-1B; the same heads with D = 128; Llama-3.2-3B (H not a power of two).
HEAD_CONFIGS = [(32, 8, 64), (32, 8, 128), (24, 8, 128)]
HIDDEN = 2048  # Llama-3.2-1B
INTERMEDIATE = 8192
EPS = 1e-5
# Written into every cache slot the step does not own: a write there shows up as a changed value.
POISON = 1000.0
FP32_TOLERANCE = 1e-5  # of max |ref|
SIGNIFICAND_BITS = {torch.bfloat16: 8, torch.float16: 11, torch.float32: 24}


def _ops():
    from minillama.ops.triton import fused_ops

    return fused_ops


# ----------------------------------------------------------------------------------------
# The PyTorch code paths being replaced (the engine's own functions where it has them)
# ----------------------------------------------------------------------------------------


def reference_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """ops/reference/rms_norm.py, the model's PyTorch path."""
    return rms_norm(x, weight, eps)


def reference_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """LlamaDecoderLayer's `hidden = hidden + attn_out`, then the next RMSNorm."""
    return add_rms_norm(x, residual, weight, eps)


def reference_rotary_and_store(
    qkv: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ops/reference/rotary_and_store.py's apply_rotary and store_kvcache (padding rows, slot < 0,
    left out of the store). -> q [N, H, D], k [N, Hkv, D] rotated (padding rows too)."""
    heads = qkv.view(-1, num_heads + 2 * num_kv_heads, head_dim)
    qk = apply_rotary(heads[:, : num_heads + num_kv_heads], cos, sin)
    q, k = qk.split([num_heads, num_kv_heads], dim=1)
    v = heads[:, num_heads + num_kv_heads :]
    real = slot_mapping >= 0
    store_kvcache(k[real], v[real], k_cache, v_cache, slot_mapping[real].long())  # int64, as in the engine
    return q, k


def reference_silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """LlamaMLP.forward between the two projections: ops/reference/silu_and_mul.py."""
    return silu_and_mul(gate_up)


# ----------------------------------------------------------------------------------------
# Comparisons
# ----------------------------------------------------------------------------------------


def ulp(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The spacing of `dtype`'s numbers at |x| (the wider one at a power of two), in fp32."""
    x = x.float().abs()
    _, exponent = torch.frexp(x)  # |x| = m * 2^exponent, 0.5 <= m < 1
    spacing = torch.pow(2.0, (exponent - SIGNIFICAND_BITS[dtype]).float())
    finfo = torch.finfo(dtype)
    smallest = finfo.smallest_normal * finfo.eps  # the subnormals' spacing
    return torch.where(x == 0, smallest, spacing.clamp_min(smallest))


def assert_matches(out: torch.Tensor, ref: torch.Tensor, ulps: int, what: str, ulp_dtype: torch.dtype | None = None) -> None:
    """ulps == 0: bit-identical. Otherwise fp16/bf16: every element within `ulps` ulps of its
    reference value; fp32: max |out - ref| <= 1e-5 max |ref|, unless ulp_dtype names the
    fp16/bf16 dtype whose rounding an fp32 result inherits (a wider weight times a normalised
    fp16/bf16 value): then within `ulps` ulps of ulp_dtype."""
    assert out.shape == ref.shape, f"{what}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    assert out.dtype == ref.dtype, f"{what}: dtype {out.dtype} != {ref.dtype}"
    assert not out.isnan().any(), f"{what}: NaN in the output"
    diff = (out.float() - ref.float()).abs()
    ulp_dtype = ulp_dtype or out.dtype
    in_ulps = diff / ulp(ref, ulp_dtype)
    worst = in_ulps.max().item()
    if ulps == 0:
        assert torch.equal(out, ref), f"{what}: not bit-identical, {(diff > 0).sum().item()} elements differ, worst by {worst:.1f} ulps"
    elif ulp_dtype == torch.float32:
        scale = ref.abs().max().item()
        assert diff.max().item() <= FP32_TOLERANCE * scale, f"{what}: max diff {diff.max().item():.3e}, scale {scale:.3e}"
    else:
        assert worst <= ulps, f"{what}: {(in_ulps > ulps).sum().item()} elements off by more than {ulps} ulps, worst {worst:.1f}"


# ----------------------------------------------------------------------------------------
# The cases
# ----------------------------------------------------------------------------------------


def run_norm_case(num_tokens: int, hidden: int, dtype: torch.dtype, device: str, weight_dtype=None) -> None:
    ops = _ops()
    weight_dtype = weight_dtype or dtype
    # A residual stream several times larger than the sublayer output added to it, as in a model.
    residual = (4 * torch.randn(num_tokens, hidden, device=device)).to(dtype)
    x = torch.randn(num_tokens, hidden, device=device).to(dtype)
    weight = (1 + 0.5 * torch.randn(hidden, device=device)).to(weight_dtype)

    normed, new_residual = ops.fused_add_rms_norm(x, residual, weight, EPS)
    ref_normed, ref_residual = reference_add_rms_norm(x, residual, weight, EPS)
    assert_matches(new_residual, ref_residual, 0, "new_residual")  # the add is bit-identical in every dtype
    # A wider (fp32) weight keeps x's rounding of the normalised value: 2 ulps of x's dtype.
    assert_matches(normed, ref_normed, 2, "fused_add_rms_norm", ulp_dtype=dtype)
    normed = ops.rms_norm(residual, weight, EPS)
    assert_matches(normed, reference_rms_norm(residual, weight, EPS), 2, "rms_norm", ulp_dtype=dtype)


def run_rotary_case(
    num_tokens: int, heads: tuple[int, int, int], dtype: torch.dtype, device: str, block_size: int = 16,
    padding: bool = False, slot_dtype: torch.dtype = torch.int64,
) -> None:
    ops = _ops()
    num_heads, num_kv_heads, head_dim = heads
    qkv = torch.randn(num_tokens, (num_heads + 2 * num_kv_heads) * head_dim, device=device).to(dtype)
    # The engine's tables (RotaryEmbedding.cos_sin) at random positions, Llama-3's theta.
    positions = torch.randint(0, 100_000, (num_tokens,), device=device)
    inv_freq = 1.0 / 500_000.0 ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim)
    angles = positions.float()[:, None] * inv_freq  # [N, D/2]
    cos = torch.cat((angles.cos(), angles.cos()), -1).unsqueeze(1).to(dtype)  # [N, 1, D]
    sin = torch.cat((angles.sin(), angles.sin()), -1).unsqueeze(1).to(dtype)

    num_blocks = (num_tokens + 2 * block_size - 1) // block_size + 3  # room to spare: unowned slots
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = torch.full(shape, POISON, dtype=dtype, device=device)
    v_cache = torch.full(shape, POISON, dtype=dtype, device=device)
    slots = torch.randperm(num_blocks * block_size, device=device)[:num_tokens]  # scattered, distinct
    if padding:
        slots[torch.rand(num_tokens, device=device) < 0.3] = -1
        slots[-1] = -1
    slots = slots.to(slot_dtype)
    ref_k, ref_v = k_cache.clone(), v_cache.clone()

    q, no_k = ops.rotary_and_store(qkv, cos, sin, k_cache, v_cache, slots, num_heads, num_kv_heads, head_dim)
    ref_q, ref_rotated_k = reference_rotary_and_store(
        qkv, cos, sin, ref_k, ref_v, slots, num_heads, num_kv_heads, head_dim,
    )

    assert q.is_contiguous() and no_k is None
    assert_matches(q, ref_q, 0, "q")
    # keep_k (a prefill step over fresh keys): the same q and cache writes, and every row's
    # rotated keys, padding rows too, as the reference returns them.
    kept_k_cache, kept_v_cache = torch.full_like(k_cache, POISON), torch.full_like(v_cache, POISON)
    kept_q, kept_k = ops.rotary_and_store(
        qkv, cos, sin, kept_k_cache, kept_v_cache, slots, num_heads, num_kv_heads, head_dim, keep_k=True,
    )
    assert kept_k.shape == (num_tokens, num_kv_heads, head_dim) and kept_k.is_contiguous()
    assert_matches(kept_k, ref_rotated_k, 0, "kept k")
    assert torch.equal(kept_q, q) and torch.equal(kept_k_cache, k_cache) and torch.equal(kept_v_cache, v_cache)
    assert_matches(k_cache, ref_k, 0, "k_cache")
    assert torch.equal(v_cache, ref_v), "v_cache: v is copied, so it must be bit-identical"
    # Belt and braces: the slots the step does not own still hold the poison, in both caches.
    untouched = torch.ones(num_blocks * block_size, dtype=torch.bool, device=device)
    untouched[slots[slots >= 0]] = False
    for name, cache in (("k_cache", k_cache), ("v_cache", v_cache)):
        assert (cache.view(-1, num_kv_heads, head_dim)[untouched] == POISON).all(), f"{name}: an unowned slot was written"


def run_silu_case(num_tokens: int, intermediate: int, dtype: torch.dtype, device: str) -> None:
    gate_up = (2 * torch.randn(num_tokens, 2 * intermediate, device=device)).to(dtype)
    out = _ops().silu_and_mul(gate_up)
    assert_matches(out, reference_silu_and_mul(gate_up), 2, "silu_and_mul")


# ----------------------------------------------------------------------------------------
# CUDA
# ----------------------------------------------------------------------------------------


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_tokens", NUM_TOKENS)
def test_rms_norm_matches_pytorch(num_tokens: int, dtype: torch.dtype):
    run_norm_case(num_tokens, HIDDEN, dtype, "cuda")


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("hidden", [3072, 4096, 8192])  # Llama-3.2-3B, 3.1-8B, 3.1-70B
def test_rms_norm_other_widths(hidden: int):
    run_norm_case(7, hidden, torch.bfloat16, "cuda")


@pytest.mark.cuda
@requires_cuda
def test_rms_norm_fp32_weight():
    """weight * normed.to(x.dtype) with a wider weight promotes to fp32, in PyTorch and here."""
    run_norm_case(7, HIDDEN, torch.bfloat16, "cuda", weight_dtype=torch.float32)


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads", HEAD_CONFIGS)
@pytest.mark.parametrize("num_tokens", NUM_TOKENS)
def test_rotary_and_store_matches_pytorch(num_tokens: int, heads: tuple[int, int, int], dtype: torch.dtype):
    run_rotary_case(num_tokens, heads, dtype, "cuda")


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("block_size", [16, 256])
def test_rotary_and_store_skips_padding(block_size: int):
    run_rotary_case(256, (32, 8, 64), torch.bfloat16, "cuda", block_size=block_size, padding=True)


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_tokens", NUM_TOKENS)
def test_silu_and_mul_matches_pytorch(num_tokens: int, dtype: torch.dtype):
    run_silu_case(num_tokens, INTERMEDIATE, dtype, "cuda")


@pytest.mark.cuda
@requires_cuda
def test_cuda_graph_replay():
    """Capture the four ops in one CUDA graph, then replay it on new inputs written into the
    static buffers: each replay must match PyTorch on those inputs."""
    ops = _ops()
    dtype, num_tokens, (num_heads, num_kv_heads, head_dim), block_size = torch.bfloat16, 7, (32, 8, 64), 16
    num_blocks = 8
    qkv_width = (num_heads + 2 * num_kv_heads) * head_dim

    def new_inputs() -> dict[str, torch.Tensor]:
        angles = torch.rand(num_tokens, head_dim // 2, device="cuda") * 100
        return {
            "x": torch.randn(num_tokens, HIDDEN, device="cuda", dtype=dtype),
            "residual": torch.randn(num_tokens, HIDDEN, device="cuda", dtype=dtype),
            "weight": torch.randn(HIDDEN, device="cuda", dtype=dtype),
            "qkv": torch.randn(num_tokens, qkv_width, device="cuda", dtype=dtype),
            "cos": torch.cat((angles.cos(), angles.cos()), -1).unsqueeze(1).to(dtype),
            "sin": torch.cat((angles.sin(), angles.sin()), -1).unsqueeze(1).to(dtype),
            "slots": torch.randperm(num_blocks * block_size, device="cuda")[:num_tokens],
            "gate_up": torch.randn(num_tokens, 2 * INTERMEDIATE, device="cuda", dtype=dtype),
        }

    static = new_inputs()
    k_cache = torch.zeros(num_blocks, block_size, num_kv_heads, head_dim, device="cuda", dtype=dtype)
    v_cache = torch.zeros_like(k_cache)

    def step() -> tuple[torch.Tensor, ...]:
        normed, new_residual = ops.fused_add_rms_norm(static["x"], static["residual"], static["weight"], EPS)
        q, _ = ops.rotary_and_store(
            static["qkv"], static["cos"], static["sin"], k_cache, v_cache, static["slots"],
            num_heads, num_kv_heads, head_dim,
        )
        return normed, new_residual, q, ops.silu_and_mul(static["gate_up"])

    graph, outputs = capture_graph(step)

    for _ in range(3):
        for name, value in new_inputs().items():
            static[name].copy_(value)
        k_cache.fill_(POISON)
        v_cache.fill_(POISON)
        ref_k, ref_v = k_cache.clone(), v_cache.clone()
        graph.replay()
        torch.cuda.synchronize()
        normed, new_residual, q, act = outputs
        ref_normed, ref_residual = reference_add_rms_norm(static["x"], static["residual"], static["weight"], EPS)
        assert_matches(normed, ref_normed, 2, "normed")
        assert_matches(new_residual, ref_residual, 0, "new_residual")
        ref_q, _ = reference_rotary_and_store(
            static["qkv"], static["cos"], static["sin"], ref_k, ref_v, static["slots"],
            num_heads, num_kv_heads, head_dim,
        )
        assert_matches(q, ref_q, 0, "q")
        assert torch.equal(k_cache, ref_k) and torch.equal(v_cache, ref_v)
        assert_matches(act, reference_silu_and_mul(static["gate_up"]), 2, "silu_and_mul")


# ----------------------------------------------------------------------------------------
# CPU, through Triton's interpreter
# ----------------------------------------------------------------------------------------


@requires_interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_interpreter_small_shapes(dtype: torch.dtype):
    """All four ops on the CPU, with the CUDA tests' tolerances. Widths that are not powers of
    two (masked columns and heads), MHA/GQA/MQA, padding slots, several SiLU column tiles.

    fp32 and fp16 only: the interpreter has no bf16 arithmetic of its own (numpy has no bf16);
    the CUDA tests cover bf16.
    """
    for num_tokens in (1, 5):
        for hidden in (64, 96):
            run_norm_case(num_tokens, hidden, dtype, "cpu")
        for heads in [(4, 2, 16), (3, 1, 32), (2, 2, 8)]:
            run_rotary_case(num_tokens, heads, dtype, "cpu", block_size=4)
        for intermediate in (80, 1500):
            run_silu_case(num_tokens, intermediate, dtype, "cpu")
    run_rotary_case(9, (4, 2, 16), dtype, "cpu", block_size=4, padding=True)
    run_rotary_case(9, (4, 2, 16), dtype, "cpu", block_size=4, padding=True, slot_dtype=torch.int32)
    if dtype == torch.float16:
        run_norm_case(3, 96, dtype, "cpu", weight_dtype=torch.float32)


@requires_interpreter
def test_interpreter_empty_batch():
    """N = 0 launches nothing and returns empty tensors of the right shapes."""
    ops = _ops()
    x = torch.empty(0, 64)
    normed, new_residual = ops.fused_add_rms_norm(x, x, torch.ones(64), EPS)
    assert normed.shape == new_residual.shape == (0, 64)
    assert ops.silu_and_mul(torch.empty(0, 32)).shape == (0, 16)
    cache = torch.zeros(2, 4, 1, 16)
    q, k = ops.rotary_and_store(
        torch.empty(0, 4 * 16), torch.empty(0, 1, 16), torch.empty(0, 1, 16), cache, cache.clone(),
        torch.empty(0, dtype=torch.long), 2, 1, 16, keep_k=True,
    )
    assert q.shape == (0, 2, 16) and k.shape == (0, 1, 16)
