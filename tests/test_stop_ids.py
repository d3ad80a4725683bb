"""The end-of-sequence ids are the ones transformers' generate stops at, however a directory
spells them: generation_config.json's eos_token_id when that file exists (even when it has none,
or null, or []: then nothing ends a sequence but max_tokens), config.json's otherwise, and never
the tokenizer's eos_token (generate does not read the tokenizer). Each layout is run greedily
on the engine and on transformers' generate, from the directory and from the model in memory,
and both must stop at the same token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_hf_parity import hf_greedy, run_to_end
from tiny_model import write_byte_tokenizer

from minillama import EngineConfig, LLMEngine, SamplingParams

PROMPT = [5, 17, 99, 42, 7]
MAX_TOKENS = 10
VOCAB = 300  # past the byte tokenizer's 256: an end id may be one no text encodes to


def free_run(path: Path) -> list[int]:
    """The greedy continuation of PROMPT with no end token at all."""
    from transformers import LlamaForCausalLM

    return hf_greedy(LlamaForCausalLM.from_pretrained(path).eval(), PROMPT, MAX_TOKENS)


def first_seen(tokens: list[int]) -> list[int]:
    return list(dict.fromkeys(tokens))


# name -> edit(directory, early, late): early and late are tokens the free run draws, early
# first. A layout whose end ids are read from the wrong file stops at the other one, or not at all.
def generation_list(path: Path, early: int, late: int) -> None:
    """Llama-3's layout: config.json names one id, generation_config.json a list without it."""
    edit(path / "config.json", eos_token_id=early)
    edit(path / "generation_config.json", eos_token_id=[late, VOCAB - 1])


def generation_without_eos(path: Path, early: int, late: int) -> None:
    edit(path / "config.json", eos_token_id=early)
    edit(path / "generation_config.json", eos_token_id=None)


def generation_empty_list(path: Path, early: int, late: int) -> None:
    edit(path / "config.json", eos_token_id=early)
    edit(path / "generation_config.json", eos_token_id=[])


def config_only(path: Path, early: int, late: int) -> None:
    edit(path / "config.json", eos_token_id=late)
    (path / "generation_config.json").unlink()


def tokenizer_only(path: Path, early: int, late: int) -> None:
    """The tokenizer names an end token, neither config does: generate never stops on it."""
    from tokenizers import pre_tokenizers

    (path / "generation_config.json").unlink()
    # The byte tokenizer's token i is the i-th character of its alphabet (tests/tiny_model.py).
    edit(path / "tokenizer_config.json", eos_token=sorted(pre_tokenizers.ByteLevel.alphabet())[early])


LAYOUTS = [generation_list, generation_without_eos, generation_empty_list, config_only, tokenizer_only]


def edit(file: Path, **fields) -> None:
    raw = json.loads(file.read_text())
    for name, value in fields.items():
        raw.pop(name, None) if value is None else raw.__setitem__(name, value)
    file.write_text(json.dumps(raw))


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda f: f.__name__)
def test_a_sequence_ends_where_transformers_generate_ends_it(tmp_path, layout):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=False, bos_token_id=None, eos_token_id=None, pad_token_id=None,
        initializer_range=0.1,
    )).save_pretrained(tmp_path)
    write_byte_tokenizer(tmp_path)
    tokens = first_seen([t for t in free_run(tmp_path) if t < 256])
    assert len(tokens) >= 3, "the free run should draw three different byte tokens"
    layout(tmp_path, tokens[1], tokens[2])
    hf = LlamaForCausalLM.from_pretrained(tmp_path).eval()
    expected = hf.generate(torch.tensor([PROMPT]), max_new_tokens=MAX_TOKENS, do_sample=False,
                           pad_token_id=0)[0, len(PROMPT):].tolist()
    config = EngineConfig(device="cpu", dtype="float32", num_kv_blocks=16, block_size=4)
    for engine in (LLMEngine.from_pretrained(tmp_path, config), LLMEngine.from_hf_model(hf, config)):
        request = engine.add_request(PROMPT, SamplingParams(temperature=0, max_tokens=MAX_TOKENS))
        run_to_end(engine)
        assert list(engine.request(request).output_token_ids) == expected
