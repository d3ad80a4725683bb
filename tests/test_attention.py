"""Every attention path against the readable reference, on fresh random inputs each run."""

from __future__ import annotations

import pytest
import torch

from minillama.ops.attention import select_attention
from minillama.ops.cpu import cpu_paged
from minillama.ops.reference import reference_attention as reference
from minillama.ops.reference.rotary_and_store import store_kvcache

SHAPES = [(4, 2, 16), (4, 1, 32), (4, 4, 16), (6, 2, 64)]  # (H, Hkv, D): GQA, MQA, MHA, wider


def backends(device: torch.device) -> list[str]:
    names = ["sdpa"]
    if device.type == "cuda":
        names += [n for n in ("flash-attn", "triton") if _available(n, device)]
    return names


def _available(name: str, device: torch.device) -> bool:
    try:
        select_attention(name, device)
        return True
    except ValueError:
        return False


def paged_batch(lengths: list[int], num_kv_heads: int, head_dim: int, block_size: int, device, dtype):
    """Random K/V for sequences of `lengths` scattered over a shuffled paged cache.
    Returns k_cache, v_cache [num_blocks, block_size, Hkv, D], block_table [B, max_blocks] int32."""
    blocks_per_seq = [(n + block_size - 1) // block_size for n in lengths]
    num_blocks = sum(blocks_per_seq) + 3
    order = torch.randperm(num_blocks)[: sum(blocks_per_seq)].tolist()  # non-contiguous blocks
    width = max(blocks_per_seq)
    table = torch.zeros(len(lengths), width, dtype=torch.int32)
    for b, nb in enumerate(blocks_per_seq):
        table[b, :nb] = torch.tensor([order.pop() for _ in range(nb)])
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = torch.randn(shape, device=device, dtype=dtype)
    v_cache = torch.randn(shape, device=device, dtype=dtype)
    return k_cache, v_cache, table.to(device)


def cumulative(lengths: list[int], device) -> torch.Tensor:
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def check_backend(name: str, device: torch.device, dtype: torch.dtype, tolerance: float) -> None:
    backend = select_attention(name, device, dtype)
    block_size = 16 if backend.min_block_size == 1 else backend.min_block_size
    for num_heads, num_kv_heads, head_dim in SHAPES:
        # Prefill, fresh K/V.
        q_lens = torch.randint(1, 40, (4,)).tolist()
        total = sum(q_lens)
        q = torch.randn(total, num_heads, head_dim, device=device, dtype=dtype)
        k = torch.randn(total, num_kv_heads, head_dim, device=device, dtype=dtype)
        v = torch.randn(total, num_kv_heads, head_dim, device=device, dtype=dtype)
        cu = cumulative(q_lens, device)
        args = (q, k, v, cu, cu, max(q_lens), max(q_lens))
        out = backend.varlen(*args, softmax_scale=head_dim**-0.5, causal=True)
        assert not out.isnan().any()
        assert relative_error(out, reference.flash_attn_varlen_func(*args, softmax_scale=head_dim**-0.5)) < tolerance
        # Prefill over a cached prefix: keys are longer than queries and read through block tables.
        k_lens = [n + int(torch.randint(0, 50, ())) for n in q_lens]
        k_cache, v_cache, table = paged_batch(k_lens, num_kv_heads, head_dim, block_size, device, dtype)
        args = (q, k_cache, v_cache, cu, cumulative(k_lens, device), max(q_lens), max(k_lens))
        out = backend.varlen(*args, causal=True, block_table=table)
        expected = reference.flash_attn_varlen_func(*args, block_table=table)
        assert relative_error(out, expected) < tolerance
        # Decode: one query per sequence over the paged cache.
        lengths = torch.randint(1, 100, (5,)).tolist()
        k_cache, v_cache, table = paged_batch(lengths, num_kv_heads, head_dim, block_size, device, dtype)
        q1 = torch.randn(len(lengths), 1, num_heads, head_dim, device=device, dtype=dtype)
        seqlens = torch.tensor(lengths, dtype=torch.int32, device=device)
        out = backend.decode(q1, k_cache, v_cache, seqlens, table, causal=True)
        expected = reference.flash_attn_with_kvcache(q1, k_cache, v_cache, seqlens, table)
        assert out.shape == q1.shape and not out.isnan().any()
        assert relative_error(out, expected) < tolerance


def test_sdpa_matches_reference_cpu():
    check_backend("sdpa", torch.device("cpu"), torch.float32, 1e-5)


requires_cpu_kernel = pytest.mark.skipif(not cpu_paged.available(), reason="no C compiler to build the kernel")


@requires_cpu_kernel
def test_the_cpu_backend_matches_reference():
    check_backend("cpu", torch.device("cpu"), torch.float32, 1e-5)


@requires_cpu_kernel
@pytest.mark.parametrize("block_size", [1, 5, 16])
def test_the_cpu_decode_kernel_reads_any_block_size_and_long_contexts(block_size):
    lengths = [1, block_size, block_size + 1, 700, 1500]
    k_cache, v_cache, table = paged_batch(lengths, 2, 64, block_size, "cpu", torch.float32)
    q = torch.randn(len(lengths), 1, 6, 64)
    seqlens = torch.tensor(lengths, dtype=torch.int32)
    out = cpu_paged.flash_attn_with_kvcache(q, k_cache, v_cache, seqlens, table, softmax_scale=0.3)
    expected = reference.flash_attn_with_kvcache(q, k_cache, v_cache, seqlens, table, softmax_scale=0.3)
    assert relative_error(out, expected) < 1e-5


@requires_cpu_kernel
def test_auto_picks_the_cpu_backend_for_fp32_on_the_cpu_only():
    cpu = torch.device("cpu")
    assert select_attention("auto", cpu, torch.float32).name == "cpu"
    assert select_attention("auto", cpu, torch.bfloat16).name == "sdpa"
    with pytest.raises(ValueError, match="float32 only"):
        select_attention("cpu", cpu, torch.bfloat16)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_every_cuda_backend_matches_reference(dtype):
    device = torch.device("cuda")
    for name in backends(device):
        check_backend(name, device, dtype, 2e-2)


def test_reference_equals_explicit_softmax():
    """The reference itself, on one sequence with a cached prefix, against a hand-written loop."""
    lq, lk, heads, kv_heads, dim = 3, 7, 4, 2, 8
    q, k, v = torch.randn(lq, heads, dim), torch.randn(lk, kv_heads, dim), torch.randn(lk, kv_heads, dim)
    out = reference.attend(q, k, v, dim**-0.5, causal=True)
    for i in range(lq):
        for h in range(heads):
            visible = lk - lq + i + 1  # query i is position lk - lq + i
            g = h // (heads // kv_heads)
            weights = torch.softmax(k[:visible, g] @ q[i, h] * dim**-0.5, dim=0)
            assert torch.allclose(out[i, h], weights @ v[:visible, g], atol=1e-6)


def test_store_kvcache_writes_each_token_to_its_slot():
    k_cache = torch.zeros(5, 4, 2, 8)
    v_cache = torch.zeros(5, 4, 2, 8)
    key, value = torch.randn(3, 2, 8), torch.randn(3, 2, 8)
    slots = torch.tensor([17, 2, 8])  # block 4 offset 1, block 0 offset 2, block 2 offset 0
    store_kvcache(key, value, k_cache, v_cache, slots)
    for t, (block, offset) in enumerate([(4, 1), (0, 2), (2, 0)]):
        assert torch.equal(k_cache[block, offset], key[t]) and torch.equal(v_cache[block, offset], value[t])
    assert int((k_cache != 0).any(-1).any(-1).sum()) == 3  # nothing else was touched
