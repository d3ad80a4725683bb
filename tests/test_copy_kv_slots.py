"""Copies on write of KV slots: the Triton kernel against the PyTorch reference, bit for bit, and
the engine's copy_kv_slots against the slice assignments it stands for."""

from __future__ import annotations

import pytest
import torch
from triton_support import requires_cuda, requires_interpreter

from minillama.ops.reference.copy_kv_slots import copy_kv_slots as reference_copy


def random_cache(blocks: int, device: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[L=3, 2, blocks, block_size=4, Hkv=2, D=8], every element distinct."""
    return torch.randn(3, 2, blocks, 4, 2, 8, generator=torch.Generator().manual_seed(0)).to(device, dtype)


# (src_block, dst_block, num_slots) over 10 blocks of 4 slots: a part of a block, a whole block,
# one slot, none; no destination is also a source.
COPIES = [(0, 9, 3), (3, 5, 2), (2, 6, 4), (8, 7, 1), (4, 1, 0)]
SOURCES_OF = {dst: (src, n) for src, dst, n in COPIES}


def table(device: str) -> torch.Tensor:
    return torch.tensor(COPIES, dtype=torch.int64, device=device)


def test_reference_copies_exactly_the_slots_asked():
    cache = random_cache(10, "cpu")
    before = cache.clone()
    reference_copy(cache, table("cpu"))
    for block in range(10):
        src, n = SOURCES_OF.get(block, (block, 0))
        assert torch.equal(cache[:, :, block, :n], before[:, :, src, :n])
        assert torch.equal(cache[:, :, block, n:], before[:, :, block, n:])  # the rest untouched


def _triton_equals_reference(device: str, dtype: torch.dtype) -> None:
    from minillama.ops.triton.copy_kv_slots import copy_kv_slots as triton_copy

    expected, got = random_cache(10, device, dtype), random_cache(10, device, dtype)
    reference_copy(expected, table(device))
    triton_copy(got, table(device))
    assert torch.equal(got, expected)


@requires_interpreter
def test_triton_kernel_equals_reference_in_the_interpreter():
    _triton_equals_reference("cpu", torch.float32)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_triton_kernel_equals_reference_on_cuda(dtype):
    _triton_equals_reference("cuda", dtype)


@requires_cuda
@pytest.mark.cuda
def test_triton_kernel_addresses_a_cache_past_2_to_the_31_elements():
    """A bf16 cache of 2^31 + a block elements (4 GiB): the last block, in the last layer's V."""
    row = 8 * 128  # Hkv x D
    blocks = (2**31) // (2 * 2 * 16 * row) + 1
    cache = torch.zeros(2, 2, blocks, 16, 8, 128, dtype=torch.bfloat16, device="cuda")
    assert cache.numel() > 2**31
    cache[1, 1, blocks - 2, :3] = 7.0
    from minillama.ops.triton.copy_kv_slots import copy_kv_slots as triton_copy

    triton_copy(cache, torch.tensor([[blocks - 2, blocks - 1, 3]], device="cuda"))
    assert torch.all(cache[1, 1, blocks - 1, :3] == 7.0) and torch.all(cache[1, 1, blocks - 1, 3:] == 0)


def test_engine_copy_kv_slots_is_the_slice_assignments(tiny_model_dir):
    """ModelRunner.copy_kv_slots([(src, dst, n), ...]) == kv_cache[:, :, dst, :n] = kv_cache[:, :, src, :n]."""
    from minillama import EngineConfig, LLMEngine

    _, hf = tiny_model_dir("gqa-tied-llama3")
    engine = LLMEngine.from_hf_model(hf, EngineConfig(device="cpu", dtype="float32", num_kv_blocks=12, block_size=4))
    runner = engine.runner
    runner.kv_cache.copy_(torch.randn(runner.kv_cache.shape, generator=torch.Generator().manual_seed(1)))
    copies = [(0, 5, 3), (1, 6, 1), (2, 7, 4)]
    expected = runner.kv_cache.clone()
    for src, dst, n in copies:
        expected[:, :, dst, :n] = expected[:, :, src, :n]
    runner.copy_kv_slots(copies)
    assert torch.equal(runner.kv_cache, expected)
