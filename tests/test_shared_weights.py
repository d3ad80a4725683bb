"""Engines sharing one model (the web UI's sessions): each has its own KV pool, and interleaving
their steps changes no token of either."""

from __future__ import annotations

import pytest
import torch
from conftest import make_hf_model

from minillama import EngineConfig, LLMEngine, SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=12)


def prompts(seed: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (n,), generator=generator).tolist() for n in (5, 9, 3)]


def run_alone(engine: LLMEngine, batch: list[list[int]]) -> list[list[int]]:
    ids = [engine.add_request(p, GREEDY) for p in batch]
    while engine.has_unfinished():
        engine.step()
    return [engine.sequences[i].output_token_ids for i in ids]


CUDA = pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                          reason="needs a CUDA GPU")])


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_interleaved_engines_over_one_model_match_each_engine_alone(device):
    # On CUDA: bf16, the default attention and CUDA graphs (each engine captures its own, over its own pool).
    small, large = (4, 8) if device == "cpu" else (16, 16)
    hf = make_hf_model("gqa-tied-llama3")
    base = LLMEngine.from_hf_model(hf, EngineConfig(device=device, num_kv_blocks=32, block_size=small))
    first = LLMEngine.sharing_weights(base, EngineConfig(num_kv_blocks=10 * 4 // small + 1, block_size=small))  # preempts
    second = LLMEngine.sharing_weights(base, EngineConfig(num_kv_blocks=40, block_size=large))
    assert first.runner.model is base.runner.model and first.runner.kv_cache.data_ptr() != second.runner.kv_cache.data_ptr()

    ids_first = [first.add_request(p, GREEDY) for p in prompts(1)]
    ids_second = [second.add_request(p, GREEDY) for p in prompts(2)]
    while first.has_unfinished() or second.has_unfinished():  # one step of each, in turn
        for engine in (first, second):
            if engine.has_unfinished():
                engine.step()
    assert first.stats.preemptions > 0

    assert [first.sequences[i].output_token_ids for i in ids_first] == run_alone(base, prompts(1))
    assert [second.sequences[i].output_token_ids for i in ids_second] == run_alone(base, prompts(2))


def test_sharing_engine_keeps_the_models_device_dtype_and_context():
    base = LLMEngine.from_hf_model(make_hf_model("mqa-untied-default"), EngineConfig(device="cpu", num_kv_blocks=8, max_model_len=64))
    engine = LLMEngine.sharing_weights(base, EngineConfig(num_kv_blocks=8, dtype="bfloat16", max_model_len=4096))
    assert engine.dtype == torch.float32 and engine.max_model_len == 64
