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


def slots(pairs: list[tuple[int, int]], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    src, dst = zip(*pairs)
    return torch.tensor(src, device=device), torch.tensor(dst, device=device)


# Slot pairs (src, dst) over 10 blocks of 4: within a block, across blocks, a whole block, the last slot.
PAIRS = [(0, 36), (1, 37), (2, 38), (13, 20), (14, 21), (8, 24), (9, 25), (10, 26), (11, 27), (39, 3)]


def test_reference_copies_exactly_the_slots_asked():
    cache = random_cache(10, "cpu")
    before = cache.clone()
    reference_copy(cache, *slots(PAIRS, "cpu"))
    flat, old = cache.flatten(2, 3), before.flatten(2, 3)
    for src, dst in PAIRS:
        assert torch.equal(flat[:, :, dst], old[:, :, src])
    untouched = [s for s in range(40) if s not in {dst for _, dst in PAIRS}]
    assert torch.equal(flat[:, :, untouched], old[:, :, untouched])


def _triton_equals_reference(device: str, dtype: torch.dtype) -> None:
    from minillama.ops.triton.copy_kv_slots import copy_kv_slots as triton_copy

    expected, got = random_cache(10, device, dtype), random_cache(10, device, dtype)
    reference_copy(expected, *slots(PAIRS, device))
    triton_copy(got, *slots(PAIRS, device))
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
    """A bf16 cache of 2^31 + a block elements (4 GiB): slots at its far end, in the last layer's V."""
    row = 8 * 128  # Hkv x D
    blocks = (2**31) // (2 * 2 * 16 * row) + 1
    cache = torch.zeros(2, 2, blocks, 16, 8, 128, dtype=torch.bfloat16, device="cuda")
    assert cache.numel() > 2**31
    last = blocks * 16 - 1
    cache[1, 1].view(-1, row)[last - 1] = 7.0
    from minillama.ops.triton.copy_kv_slots import copy_kv_slots as triton_copy

    triton_copy(cache, torch.tensor([last - 1], device="cuda"), torch.tensor([last], device="cuda"))
    assert torch.all(cache[1, 1].view(-1, row)[last] == 7.0)


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
