"""The Triton attention kernels (minillama/ops/triton/triton_paged.py) against an fp32 reference.

The CUDA tests need a GPU and Triton:  pytest -m cuda tests/test_triton_attention.py
The interpreter test runs the same kernels on the CPU through Triton's interpreter, on small
shapes; conftest.py turns it on where there is no GPU:  pytest tests/test_triton_attention.py -k interpreter
Inputs are fresh random every run (no fixed seed): the kernels must be right on any input.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
import torch
from triton_support import capture_graph, requires_cuda, requires_interpreter

# Large keys/values written into every cache slot no sequence owns: if a kernel reads one into
# its result (a padding block-table entry, a slot past a sequence's length), the output is off.
POISON = 1000.0
DTYPES = [torch.bfloat16, torch.float16]
TOLERANCE = {torch.bfloat16: 2e-2, torch.float16: 1e-2}
# (H, Hkv, D): GQA with head_dim 64 and 128, MQA, MHA.
HEAD_CONFIGS = [(32, 8, 64), (24, 8, 128), (16, 1, 64), (32, 1, 128), (16, 16, 128)]


def _kernels():
    from minillama.ops.triton import triton_paged

    return triton_paged


# ----------------------------------------------------------------------------------------
# The fp32 reference and the test inputs
# ----------------------------------------------------------------------------------------


def reference_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool
) -> torch.Tensor:
    """One sequence in fp32. q: [Lq, H, D]; k, v: [Lk, Hkv, D] -> [Lq, H, D].

    Query i sits at position i + Lk - Lq (bottom-right causal alignment).
    """
    group = q.shape[1] // k.shape[1]
    k = k.float().repeat_interleave(group, dim=1)  # [Lk, H, D]
    v = v.float().repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.float(), k) * scale  # [H, Lq, Lk]
    if causal:
        lq, lk = q.shape[0], k.shape[0]
        query_pos = torch.arange(lq, device=q.device)[:, None] + (lk - lq)
        future = torch.arange(lk, device=q.device)[None, :] > query_pos
        scores = scores.masked_fill(future, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(dim=-1), v)


@dataclass
class PagedCache:
    k_cache: torch.Tensor  # [num_blocks, block_size, Hkv, D]
    v_cache: torch.Tensor
    block_table: torch.Tensor  # [B, max_blocks] int32


def make_paged_cache(
    keys: list[torch.Tensor], values: list[torch.Tensor], block_size: int, extra_blocks: int = 3,
    poison: float = POISON,
) -> PagedCache:
    """Write each sequence's [L, Hkv, D] keys/values into shuffled physical blocks.

    Unowned slots hold `poison`; the block table has `extra_blocks` more columns than the longest
    sequence needs, padded with random (valid) block ids.
    """
    num_kv_heads, head_dim = keys[0].shape[1:]
    device, dtype = keys[0].device, keys[0].dtype
    needed = [-(-k.shape[0] // block_size) for k in keys]
    num_blocks = sum(needed) + extra_blocks
    max_blocks = max(needed) + extra_blocks
    physical = torch.randperm(num_blocks, device=device)
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = torch.full(shape, poison, dtype=dtype, device=device)
    v_cache = torch.full(shape, poison, dtype=dtype, device=device)
    block_table = torch.randint(0, num_blocks, (len(keys), max_blocks), dtype=torch.int32, device=device)
    used = 0
    for b, (k, v) in enumerate(zip(keys, values)):
        blocks = physical[used : used + needed[b]]
        used += needed[b]
        block_table[b, : needed[b]] = blocks.int()
        length = k.shape[0]
        padded = needed[b] * block_size
        k_cache[blocks] = torch.cat([k, k_cache.new_full((padded - length, num_kv_heads, head_dim), poison)]).view(
            needed[b], block_size, num_kv_heads, head_dim
        )
        v_cache[blocks] = torch.cat([v, v_cache.new_full((padded - length, num_kv_heads, head_dim), poison)]).view(
            needed[b], block_size, num_kv_heads, head_dim
        )
    return PagedCache(k_cache, v_cache, block_table)


def assert_close(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    """||out - ref|| / ||ref|| under the dtype's tolerance, and every row of heads written."""
    assert out.shape == ref.shape and out.dtype == dtype
    out, ref = out.float(), ref.float()
    assert not out.isnan().any(), "NaN in the output"
    error = ((out - ref).norm() / ref.norm()).item()
    assert error < TOLERANCE[dtype], f"relative error {error:.2e}"
    # Each (token, head) row on its own, so that one unwritten or wrong row cannot hide.
    rows_out, rows_ref = out.reshape(-1, out.shape[-1]), ref.reshape(-1, ref.shape[-1])
    row_error = ((rows_out - rows_ref).norm(dim=-1) / rows_ref.norm(dim=-1).clamp_min(1e-6)).max().item()
    assert row_error < 10 * TOLERANCE[dtype], f"worst row's relative error {row_error:.2e}"


def run_decode_case(
    batch: int,
    heads: tuple[int, int, int],
    dtype: torch.dtype,
    block_size: int,
    max_len: int,
    device: str,
    num_splits: int = 0,
    tma: bool | None = None,
    poison: float = POISON,
) -> None:
    """tma: the kernel reading K/V with TMA copies (True), with pointer loads (False), or the one
    the GPU allows (None)."""
    num_heads, num_kv_heads, head_dim = heads
    lengths = [random.randint(1, max_len) for _ in range(batch)]
    keys = [torch.randn(n, num_kv_heads, head_dim, dtype=dtype, device=device) for n in lengths]
    values = [torch.randn(n, num_kv_heads, head_dim, dtype=dtype, device=device) for n in lengths]
    cache = make_paged_cache(keys, values, block_size, poison=poison)
    q = torch.randn(batch, 1, num_heads, head_dim, dtype=dtype, device=device)
    seqlens = torch.tensor(lengths, dtype=torch.int32, device=device)
    scale = head_dim**-0.5

    out = _kernels().flash_attn_with_kvcache(
        q, cache.k_cache, cache.v_cache, cache_seqlens=seqlens, block_table=cache.block_table,
        softmax_scale=scale, causal=True, num_splits=num_splits, tma=tma,
    )
    ref = torch.stack([reference_attention(q[b], keys[b], values[b], scale, True) for b in range(batch)])
    assert_close(out, ref, dtype)


def run_varlen_case(
    batch: int,
    heads: tuple[int, int, int],
    dtype: torch.dtype,
    max_len: int,
    max_prefix: int,
    paged: bool,
    causal: bool,
    device: str,
    block_size: int = 16,
) -> None:
    num_heads, num_kv_heads, head_dim = heads
    q_lens = [random.randint(1, max_len) for _ in range(batch)]
    k_lens = [n + random.randint(0, max_prefix) for n in q_lens]  # a cached prefix, then the new tokens
    queries = [torch.randn(n, num_heads, head_dim, dtype=dtype, device=device) for n in q_lens]
    keys = [torch.randn(n, num_kv_heads, head_dim, dtype=dtype, device=device) for n in k_lens]
    values = [torch.randn(n, num_kv_heads, head_dim, dtype=dtype, device=device) for n in k_lens]
    q = torch.cat(queries)
    cu_q = torch.tensor([0] + q_lens, device=device).cumsum(0).int()
    cu_k = torch.tensor([0] + k_lens, device=device).cumsum(0).int()
    scale = 0.7 * head_dim**-0.5  # not the default, to check that softmax_scale is used
    if paged:
        cache = make_paged_cache(keys, values, block_size)
        k, v, block_table = cache.k_cache, cache.v_cache, cache.block_table
    else:
        k, v, block_table = torch.cat(keys), torch.cat(values), None

    out = _kernels().flash_attn_varlen_func(
        q, k, v, cu_q, cu_k, max(q_lens), max(k_lens),
        softmax_scale=scale, causal=causal, block_table=block_table,
    )
    ref = torch.cat([reference_attention(queries[b], keys[b], values[b], scale, causal) for b in range(batch)])
    assert_close(out, ref, dtype)


def run_empty_sequence_case(device: str, tma: bool | None = None) -> None:
    """cache_seqlens == 0 (a padding slot of a CUDA-graph batch) gives zeros, not NaN."""
    num_heads, num_kv_heads, head_dim, block_size = 8, 2, 64, 16
    k_cache = torch.randn(6, block_size, num_kv_heads, head_dim, dtype=torch.float16, device=device)
    v_cache = torch.randn_like(k_cache)
    q = torch.randn(2, 1, num_heads, head_dim, dtype=torch.float16, device=device)
    seqlens = torch.tensor([0, 40], dtype=torch.int32, device=device)
    block_table = torch.tensor([[5, 0, 0], [3, 1, 4]], dtype=torch.int32, device=device)
    for num_splits in (1, 3):
        out = _kernels().flash_attn_with_kvcache(
            q, k_cache, v_cache, seqlens, block_table, causal=True, num_splits=num_splits, tma=tma
        )
        assert (out[0] == 0).all()
        keys = k_cache[[3, 1, 4]].flatten(0, 1)[:40]
        values = v_cache[[3, 1, 4]].flatten(0, 1)[:40]
        assert_close(out[1], reference_attention(q[1], keys, values, head_dim**-0.5, True), torch.float16)


def run_padded_batch_case(device: str, tma: bool) -> None:
    """A batch gives the same bits alone and padded as a CUDA graph pads it: one padding row
    more (context 0) and the block table as wide as the cache. Where the context is cut into
    splits changes the rounding, so the split count must not follow either difference."""
    dtype = torch.float16
    num_heads, num_kv_heads, head_dim, block_size = 4, 1, 32, 16
    lengths = [97, 130, 61]  # several tiles each, so the splits really divide them
    keys = [torch.randn(n, num_kv_heads, head_dim, dtype=dtype, device=device) for n in lengths]
    values = [torch.randn(n, num_kv_heads, head_dim, dtype=dtype, device=device) for n in lengths]
    cache = make_paged_cache(keys, values, block_size)
    q = torch.randn(len(lengths), 1, num_heads, head_dim, dtype=dtype, device=device)
    seqlens = torch.tensor(lengths, dtype=torch.int32, device=device)
    alone = _kernels().flash_attn_with_kvcache(q, cache.k_cache, cache.v_cache, seqlens, cache.block_table, tma=tma)

    num_blocks = cache.k_cache.shape[0]
    wide = torch.zeros(len(lengths) + 1, num_blocks, dtype=torch.int32, device=device)
    wide[: len(lengths), : cache.block_table.shape[1]] = cache.block_table
    padded = _kernels().flash_attn_with_kvcache(
        torch.cat([q, torch.zeros_like(q[:1])]), cache.k_cache, cache.v_cache,
        torch.cat([seqlens, seqlens.new_zeros(1)]), wide, tma=tma,
    )
    assert torch.equal(padded[: len(lengths)], alone)


# ----------------------------------------------------------------------------------------
# CUDA
# ----------------------------------------------------------------------------------------


def tma_kernels() -> list[bool]:
    """The decode kernels this GPU runs: pointer loads always, TMA copies from Hopper on."""
    return [False, True] if torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 9 else [False]


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads", HEAD_CONFIGS)
@pytest.mark.parametrize("batch", [1, 7, 64])
@pytest.mark.parametrize("block_size", [16, 64])
def test_decode_matches_reference(batch: int, heads: tuple[int, int, int], dtype: torch.dtype, block_size: int):
    for tma in tma_kernels():
        run_decode_case(batch, heads, dtype, block_size, max_len=2000, device="cuda", tma=tma)


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("num_splits", [1, 3, 64])
def test_decode_forced_splits(num_splits: int):
    """Split counts the heuristic may not pick: one split, an odd count, more splits than tiles."""
    for tma in tma_kernels():
        run_decode_case(5, (32, 8, 128), torch.bfloat16, 16, max_len=2000, device="cuda", num_splits=num_splits, tma=tma)


@pytest.mark.cuda
@requires_cuda
def test_decode_ignores_nan_in_unowned_slots():
    """The TMA kernel copies whole tiles, slots past a sequence's end included: a NaN left there
    (freed memory) must not reach the output through its zero weight."""
    for tma in tma_kernels():
        for num_splits in (1, 3):
            run_decode_case(
                9, (32, 8, 64), torch.bfloat16, 16, max_len=300, device="cuda", num_splits=num_splits, tma=tma,
                poison=float("nan"),
            )


@pytest.mark.cuda
@requires_cuda
def test_decode_picks_tma_on_hopper():
    """Which kernel runs when nobody asks: TMA copies on Hopper and newer, over a dense cache."""
    kernels = _kernels()
    k_cache = torch.zeros(4, 16, 2, 64, dtype=torch.bfloat16, device="cuda")
    hopper = torch.cuda.get_device_capability()[0] >= 9
    assert kernels._tma_available(k_cache, k_cache) == hopper
    assert not kernels._tma_available(k_cache[:, :, :1], k_cache[:, :, :1])  # one head of two: not dense


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads", HEAD_CONFIGS)
@pytest.mark.parametrize(
    "paged, max_prefix, causal",
    [(False, 0, True), (False, 300, True), (True, 0, True), (True, 500, True), (True, 500, False)],
    ids=["flat", "flat-longer-keys", "paged", "paged-prefix", "paged-prefix-noncausal"],
)
def test_varlen_matches_reference(heads, dtype, paged: bool, max_prefix: int, causal: bool):
    batch = random.randint(1, 8)
    run_varlen_case(batch, heads, dtype, max_len=600, max_prefix=max_prefix, paged=paged, causal=causal, device="cuda")


@pytest.mark.cuda
@requires_cuda
def test_decode_same_bits_alone_and_padded():
    for tma in tma_kernels():
        run_padded_batch_case("cuda", tma)


@pytest.mark.cuda
@requires_cuda
def test_decode_empty_sequence():
    for tma in tma_kernels():
        run_empty_sequence_case("cuda", tma=tma)


@pytest.mark.cuda
@requires_cuda
def test_decode_cuda_graph_replay():
    """Capture one decode launch, then replay it with new lengths, block tables and queries."""
    kernels = _kernels()
    batch, (num_heads, num_kv_heads, head_dim), dtype, block_size = 6, (32, 8, 128), torch.bfloat16, 16
    max_blocks = 40  # up to 640 tokens per sequence
    num_blocks = batch * max_blocks
    scale = head_dim**-0.5
    k_cache = torch.randn(num_blocks, block_size, num_kv_heads, head_dim, dtype=dtype, device="cuda")
    v_cache = torch.randn_like(k_cache)
    # The graph's static inputs.
    q = torch.randn(batch, 1, num_heads, head_dim, dtype=dtype, device="cuda")
    seqlens = torch.full((batch,), block_size * max_blocks, dtype=torch.int32, device="cuda")
    block_table = torch.randperm(num_blocks, device="cuda").int().view(batch, max_blocks)

    def step() -> torch.Tensor:
        return kernels.flash_attn_with_kvcache(q, k_cache, v_cache, seqlens, block_table, scale)

    graph, out = capture_graph(step)

    for _ in range(3):
        lengths = [random.randint(1, block_size * max_blocks) for _ in range(batch)]
        seqlens.copy_(torch.tensor(lengths, dtype=torch.int32))
        block_table.copy_(torch.randperm(num_blocks, device="cuda").int().view(batch, max_blocks))
        q.copy_(torch.randn_like(q))
        graph.replay()
        torch.cuda.synchronize()
        flat_k, flat_v = k_cache.flatten(0, 1), v_cache.flatten(0, 1)
        ref = []
        for b, n in enumerate(lengths):
            slots = (block_table[b].long()[:, None] * block_size + torch.arange(block_size, device="cuda")).flatten()
            ref.append(reference_attention(q[b], flat_k[slots[:n]], flat_v[slots[:n]], scale, True))
        assert_close(out, torch.stack(ref), dtype)


# ----------------------------------------------------------------------------------------
# CPU, through Triton's interpreter
# ----------------------------------------------------------------------------------------


@requires_interpreter
# An empty split writes lse = log2(0) = -inf on purpose (the merge gives it no weight); numpy,
# which runs the interpreter's arithmetic, warns of the log of zero.
@pytest.mark.filterwarnings("ignore:divide by zero encountered in log2:RuntimeWarning")
def test_interpreter_small_shapes():
    """The kernels on the CPU: GQA, MQA, MHA; split-K decode (pointer loads and TMA copies), flat
    and paged varlen prefill.

    fp16 only: the interpreter does not support bf16 (its tl.dot multiplies bf16's raw bits,
    triton-lang/triton#11584); the CUDA tests cover bf16.
    """
    dtype = torch.float16
    # head_dim 128 takes the kernels' other tile sizes (_decode_config, _prefill_config).
    for heads in [(4, 2, 32), (4, 1, 16), (2, 2, 64), (4, 2, 128)]:
        # 0: the heuristic, which cuts a small batch's contexts into up to 32 splits (slow
        # here: one shape is enough, run_padded_batch_case tries it too).
        for num_splits in [0, 1, 3] if heads == (4, 2, 32) else [1, 3]:
            for tma in (False, True):  # the interpreter runs TMA copies too
                run_decode_case(3, heads, dtype, block_size=16, max_len=150, device="cpu", num_splits=num_splits, tma=tma)
        run_decode_case(3, heads, dtype, block_size=32, max_len=150, device="cpu", tma=True, poison=float("nan"))
        for paged, max_prefix in [(False, 0), (False, 40), (True, 0), (True, 150)]:
            run_varlen_case(3, heads, dtype, max_len=150, max_prefix=max_prefix, paged=paged, causal=True, device="cpu")
        run_varlen_case(2, heads, dtype, max_len=40, max_prefix=40, paged=True, causal=False, device="cpu")
    run_empty_sequence_case("cpu", tma=False)
    run_empty_sequence_case("cpu", tma=True)
    run_padded_batch_case("cpu", tma=False)
    run_padded_batch_case("cpu", tma=True)
