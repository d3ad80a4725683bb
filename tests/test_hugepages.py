"""CPU tensors on huge pages (minillama/hugepages.py) and the engine's use of them."""

from __future__ import annotations

import mmap
from pathlib import Path

import pytest
import torch

from minillama import EngineConfig, LLMEngine, hugepages


def test_zeros_are_zeros_of_the_shape_and_dtype_and_start_on_a_huge_page():
    t = hugepages.zeros((3, 1024, 1024), torch.float32)
    assert t.shape == (3, 1024, 1024) and t.dtype == torch.float32 and t.is_contiguous()
    assert not t.any()
    if hasattr(mmap, "MADV_HUGEPAGE"):
        assert t.data_ptr() % hugepages.HUGE_PAGE == 0
    t.fill_(2.0)  # writable, and the mapping lives as long as the tensor
    assert float(t.sum()) == 2.0 * t.numel()


def test_small_tensors_are_ordinary_ones():
    t = hugepages.zeros((4, 4), torch.bfloat16)
    assert t.shape == (4, 4) and t.dtype == torch.bfloat16 and not t.any()


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="Linux only")
def test_a_cpu_engine_keeps_its_weights_in_one_buffer_with_tied_embeddings(tiny_model_dir):
    path, hf = tiny_model_dir("gqa-tied-llama3")
    engine = LLMEngine.from_pretrained(path, EngineConfig(device="cpu", dtype="float32"))
    model = engine.runner.model
    assert model.lm_head.weight is model.model.embed_tokens.weight
    params = list(model.parameters())
    base = min(p.data_ptr() for p in params)
    span = max(p.data_ptr() + p.numel() * p.element_size() for p in params) - base
    assert span < sum(p.numel() * p.element_size() for p in params) + 64 * len(params)  # one buffer
    assert all(p.data_ptr() % 64 == 0 for p in params)
    torch.testing.assert_close(model.model.embed_tokens.weight, hf.model.embed_tokens.weight)
