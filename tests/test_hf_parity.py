"""The engine against transformers' LlamaForCausalLM on the same weights."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_CONFIGS

from minillama import EngineConfig, LLMEngine, Observer, SamplingParams


class LogitsRecorder(Observer):
    """Keeps each sampling sequence's logits, step by step."""

    def __init__(self):
        self.logits: dict[int, list[torch.Tensor]] = {}

    def on_logits(self, batch, logits):
        for item, row in zip(batch.sampling, logits):
            self.logits.setdefault(item.seq_id, []).append(row.clone())


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def run_to_end(engine: LLMEngine) -> None:
    steps = 0
    while engine.has_unfinished():
        engine.step()
        steps += 1
        assert steps < 10_000


@pytest.mark.parametrize("attention", ["reference", "sdpa"])
@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_logits_match_hf_over_prefill_and_decode(tiny_model_dir, name, attention):
    path, hf = tiny_model_dir(name)
    engine = LLMEngine.from_pretrained(
        path, EngineConfig(device="cpu", dtype="float32", attention=attention, num_kv_blocks=64, block_size=4)
    )
    recorder = LogitsRecorder()
    engine.add_observer(recorder)
    generator = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 256, (n,), generator=generator).tolist() for n in (5, 13, 1, 9)]
    ids = [engine.add_request(p, SamplingParams(temperature=0, max_tokens=6)) for p in prompts]
    run_to_end(engine)
    for request_id, prompt in zip(ids, prompts):
        seq = engine.sequences[request_id]
        full = torch.tensor([seq.token_ids])
        with torch.no_grad():
            hf_logits = hf(full).logits[0].float()  # [len, vocab]
        ours = recorder.logits[request_id]
        assert len(ours) == 6
        for i, row in enumerate(ours):  # row i predicts token len(prompt) + i
            assert relative_error(row, hf_logits[len(prompt) - 1 + i]) < 1e-4


def hf_greedy(hf, prompt: list[int], max_tokens: int) -> list[int]:
    with torch.no_grad():
        out = hf.generate(
            torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=max_tokens, do_sample=False, pad_token_id=0,
        )
    return out[0, len(prompt):].tolist()


def greedy_outputs(engine: LLMEngine, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
    ids = [engine.add_request(p, SamplingParams(temperature=0, max_tokens=max_tokens)) for p in prompts]
    run_to_end(engine)
    return [engine.sequences[i].output_token_ids for i in ids]


def test_greedy_batch_matches_hf_generate(tiny_model_dir):
    path, hf = tiny_model_dir("gqa-tied-llama3")
    generator = torch.Generator().manual_seed(2)
    prompts = [torch.randint(0, 256, (n,), generator=generator).tolist() for n in (3, 17, 8, 30, 1)]
    expected = [hf_greedy(hf, p, 12) for p in prompts]
    engine = LLMEngine.from_pretrained(path, EngineConfig(device="cpu", num_kv_blocks=64, block_size=4))
    assert greedy_outputs(engine, prompts, 12) == expected


def test_greedy_matches_hf_under_preemption(tiny_model_dir):
    path, hf = tiny_model_dir("mqa-untied-default")
    generator = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, 256, (n,), generator=generator).tolist() for n in (10, 14, 6, 12)]
    expected = [hf_greedy(hf, p, 20) for p in prompts]
    # 12 blocks of 4 tokens: each sequence needs up to 9, so four at once cannot all fit.
    engine = LLMEngine.from_pretrained(path, EngineConfig(device="cpu", num_kv_blocks=12, block_size=4))
    assert greedy_outputs(engine, prompts, 20) == expected
    assert engine.stats.preemptions > 0
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


def test_greedy_matches_hf_with_prefix_cache_hits(tiny_model_dir):
    path, hf = tiny_model_dir("gqa-tied-llama3")
    generator = torch.Generator().manual_seed(4)
    system = torch.randint(0, 256, (21,), generator=generator).tolist()
    prompts = [system + torch.randint(0, 256, (n,), generator=generator).tolist() for n in (3, 7, 1, 11)]
    expected = [hf_greedy(hf, p, 10) for p in prompts]
    engine = LLMEngine.from_pretrained(path, EngineConfig(device="cpu", num_kv_blocks=64, block_size=4))
    first = engine.add_request(prompts[0], SamplingParams(temperature=0, max_tokens=10))
    engine.step()  # prefill the first prompt, so its full blocks are computed and hashed
    rest = greedy_outputs(engine, prompts[1:], 10)
    assert [engine.sequences[first].output_token_ids, *rest] == expected
    hits = [engine.sequences[i].num_cached_tokens for i in sorted(engine.sequences)[1:]]
    assert all(h == 20 for h in hits), hits  # 5 full blocks of the shared 21-token prefix
    assert engine.block_manager.num_hit_blocks >= 15


def test_chunked_prefill_matches_hf(tiny_model_dir):
    path, hf = tiny_model_dir("mha-untied-llama3")
    generator = torch.Generator().manual_seed(5)
    prompts = [torch.randint(0, 256, (n,), generator=generator).tolist() for n in (45, 9)]
    expected = [hf_greedy(hf, p, 8) for p in prompts]
    engine = LLMEngine.from_pretrained(
        path, EngineConfig(device="cpu", num_kv_blocks=64, block_size=4, max_num_batched_tokens=16)
    )
    assert greedy_outputs(engine, prompts, 8) == expected
    assert engine.stats.prefill_steps >= 4  # 45 + 9 prompt tokens in chunks of at most 16
