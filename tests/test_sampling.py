"""The sampler: greedy, temperature, top-k, top-p, and per-request seeds."""

from __future__ import annotations

import torch

from minillama import EngineConfig, LLMEngine, ModelConfig, SamplingParams
from minillama.model.sampler import Sampler, filtered_logits

TINY = ModelConfig.from_dict(dict(
    vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=128,
))


def test_greedy_takes_argmax():
    logits = torch.randn(3, 50)
    tokens = Sampler(torch.device("cpu"), 0)(logits, [SamplingParams(temperature=0)] * 3, [None] * 3)
    assert torch.equal(tokens, logits.argmax(-1))


def test_top_k_and_top_p_keep_the_right_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.5, 0.3, 0.15, 0.05]]))
    out = filtered_logits(logits, [SamplingParams(top_k=2), SamplingParams(top_p=0.7)])
    assert torch.isfinite(out[0]).tolist() == [True, True, False, False]
    # top_p 0.7: 0.5 alone is short of 0.7, 0.5 + 0.3 reaches it, so two tokens stay.
    assert torch.isfinite(out[1]).tolist() == [True, True, False, False]
    tiny_p = filtered_logits(logits[:1], [SamplingParams(top_p=0.01)])
    assert torch.isfinite(tiny_p).sum() == 1  # the most likely token always survives


def test_sampling_follows_the_distribution():
    probs = torch.tensor([0.6, 0.3, 0.1])
    logits = probs.log().repeat(20000, 1)
    tokens = Sampler(torch.device("cpu"), 0)(logits, [SamplingParams(temperature=1.0)] * 20000, [None] * 20000)
    freq = torch.bincount(tokens, minlength=3).float() / 20000
    assert torch.allclose(freq, probs, atol=0.02)


def test_temperature_sharpens():
    logits = torch.tensor([[2.0, 1.0, 0.0]]).repeat(5000, 1)
    cold = Sampler(torch.device("cpu"), 1)(logits, [SamplingParams(temperature=0.25)] * 5000, [None] * 5000)
    hot = Sampler(torch.device("cpu"), 1)(logits, [SamplingParams(temperature=4.0)] * 5000, [None] * 5000)
    assert (cold == 0).float().mean() > 0.95 > (hot == 0).float().mean()


def test_same_seed_same_tokens_in_any_batch():
    engine = LLMEngine.from_config(TINY, EngineConfig(device="cpu", num_kv_blocks=64, block_size=4))
    seeded = SamplingParams(temperature=1.0, top_p=0.9, max_tokens=16, seed=1234)

    def run(prompts):
        ids = [engine.add_request(p, s) for p, s in prompts]
        while engine.has_unfinished():
            engine.step()
        return [engine.sequences[i].output_token_ids for i in ids]

    alone = run([([1, 2, 3], seeded)])[0]
    crowded = run([([9, 8], SamplingParams(temperature=1.0, max_tokens=20)), ([1, 2, 3], seeded),
                   ([5] * 7, SamplingParams(temperature=0.7, max_tokens=5))])[1]
    other_seed = run([([1, 2, 3], SamplingParams(temperature=1.0, top_p=0.9, max_tokens=16, seed=99))])[0]
    assert alone == crowded
    assert alone != other_seed
