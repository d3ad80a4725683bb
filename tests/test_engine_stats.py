"""EngineStats.since: a timed run's figures without its warm-up's (the benchmarks print them)."""

from __future__ import annotations

import dataclasses

import torch
from test_hf_parity import greedy_outputs

from minillama import EngineConfig, LLMEngine


def test_since_counts_only_what_came_after(tiny_model_dir):
    path, _ = tiny_model_dir("mha-untied-llama3")
    engine = LLMEngine.from_pretrained(path, EngineConfig(device="cpu", num_kv_blocks=64, block_size=4))
    generator = torch.Generator().manual_seed(3)
    warm_up = [torch.randint(0, 256, (n,), generator=generator).tolist() for n in (7, 12)]
    timed = [torch.randint(0, 256, (n,), generator=generator).tolist() for n in (9, 5, 14)]
    greedy_outputs(engine, warm_up, 4)
    before = dataclasses.replace(engine.stats)
    greedy_outputs(engine, timed, 6)
    run = engine.stats.since(before)
    assert run.prefill_tokens == sum(map(len, timed))  # no prefix is shared: every prompt token computed
    assert run.decode_tokens == 3 * 5  # the first of 6 tokens comes from the prefill step
    assert run.prefill_steps + before.prefill_steps == engine.stats.prefill_steps
    assert 0 < run.decode_seconds < engine.stats.decode_seconds
    assert run.summary().startswith(f"prefill: {sum(map(len, timed))} tokens in {run.prefill_steps} steps")
