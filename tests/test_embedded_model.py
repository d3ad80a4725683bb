"""The embedded SmolLM2-135M-Instruct end to end: GGUF -> cached HF directory -> engine."""

from __future__ import annotations

import pytest
import torch

from minillama import EngineConfig, LLMEngine, SamplingParams
from minillama.__main__ import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(embedded_dir):
    return LLMEngine.from_pretrained(embedded_dir, EngineConfig(device="cpu", num_kv_blocks=256))


def generate(engine: LLMEngine, prompts, params, chat=True) -> list[str]:
    ids = [engine.add_request(p, params, chat=chat) for p in prompts]
    while engine.has_unfinished():
        engine.step()
    texts = [engine.text(i) for i in ids]
    for i in ids:
        engine.forget(i)
    return texts


def test_cache_is_a_plain_hf_directory(embedded_dir):
    names = {p.name for p in embedded_dir.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= names


def test_answers_paris(engine):
    [answer] = generate(engine, ["What is the capital of France?"], SamplingParams(temperature=0, max_tokens=20))
    assert "Paris" in answer
    assert engine.eos_token_ids == {2}


def test_greedy_matches_hf_generate_with_preemption_and_prefix_hits(embedded_dir):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(embedded_dir, dtype=torch.float32).eval()
    # A tiny pool (12 blocks of 8 tokens) for four chat prompts that share the system prompt.
    engine = LLMEngine.from_pretrained(embedded_dir, EngineConfig(device="cpu", num_kv_blocks=12, block_size=8))
    questions = ["What is the capital of France?", "Name three primary colors.", "What is 2 + 2?", "Say hello in Spanish."]
    prompts = [engine.encode_prompt(q, chat=True) for q in questions]
    expected = []
    for p in prompts:
        with torch.no_grad():
            out = hf.generate(torch.tensor([p]), max_new_tokens=24, do_sample=False, pad_token_id=2)
        expected.append(out[0, len(p):].tolist())
    params = SamplingParams(temperature=0, max_tokens=24)
    first = engine.add_request(prompts[0], params)
    engine.step()  # its prompt blocks are now computed and cached
    ids = [first] + [engine.add_request(p, params) for p in prompts[1:]]
    while engine.has_unfinished():
        engine.step()
    assert [engine.sequences[i].output_token_ids for i in ids] == expected
    assert engine.stats.preemptions > 0
    assert engine.block_manager.num_hit_blocks > 0
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


def test_cli_chat_batch(capsys, embedded_dir):
    code = main(["--model", str(embedded_dir), "--chat", "--device", "cpu", "--max-tokens", "16",
                 "--prompt", "What is the capital of France?", "--prompt", "Write a haiku about autumn."])
    out = capsys.readouterr().out
    assert code == 0
    assert "Paris" in out and "prefill:" in out and "decode:" in out


def test_cli_reports_bad_input(capsys, embedded_dir):
    assert main(["--model", str(embedded_dir), "--device", "cpu", "--prompt", "hi", "--top-p", "1.5"]) == 2
    assert "top_p" in capsys.readouterr().err


def test_unicode_output_has_no_replacement_characters(engine):
    texts = generate(
        engine, ["Translate to Chinese: I like tea.", "Reply with three emoji only."],
        SamplingParams(temperature=0, max_tokens=24),
    )
    assert all("\ufffd" not in t for t in texts)
    assert any(ord(c) > 0x2E80 for t in texts for c in t)  # some CJK or emoji really came out
