"""Logits processors (and stop strings) that transformers' generate builds from a model's
generation settings and applies to every request (minillama/generation_config.py): the engine
implements none, so a folder that turns one on loads with one warning naming each such field,
wherever the setting is (generation_config.json, or config.json when that file is absent) and
however the model arrives (a directory, a model in memory, the command line). Neutral values, and
the decoding defaults a request overrides, load without a word.

Each field's table entry is a value that changes generate's greedy tokens on the tiny model
(shown for the first few below, against generate without it): before, the engine answered as if
the field were absent."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from test_hf_parity import hf_greedy
from test_model_shapes import make_model
from tiny_model import write_byte_tokenizer

import minillama.__main__
from minillama import EngineConfig, LLMEngine, SamplingParams, UnappliedSettingWarning
from minillama.generation_config import APPLIED_TO_EVERY_REQUEST

EVEN = list(range(0, 256, 2))
# field -> a value that turns its processor on.
TURNED_ON = {
    "repetition_penalty": 1.5,
    "no_repeat_ngram_size": 2,
    "bad_words_ids": [[i] for i in EVEN],
    "suppress_tokens": EVEN,
    "begin_suppress_tokens": EVEN,
    "sequence_bias": [[[4], 100.0]],
    "forced_bos_token_id": 9,
    "forced_eos_token_id": 3,
    "min_length": 30,
    "min_new_tokens": 20,
    "exponential_decay_length_penalty": [1, 5.0],
    "guidance_scale": 2.0,
    "watermarking_config": {"greenlist_ratio": 0.5},
    "stop_strings": ["\n\n"],
    "token_healing": True,
}
# Values of the wrong type count as set (a string "1.0" is not the neutral 1.0).
WRONG_TYPES = {"repetition_penalty": "1.0", "no_repeat_ngram_size": True, "min_length": False}
# Fields whose effect shows on a greedy run of PROMPT (the others act at the first position of a
# one-token prompt, near an end token or at a length past this run).
SHOWN = ["repetition_penalty", "no_repeat_ngram_size", "bad_words_ids", "suppress_tokens", "sequence_bias",
         "guidance_scale"]
PROMPT = [5, 17, 99, 42, 7, 5, 17, 99]
CONFIG = EngineConfig(device="cpu", num_kv_blocks=16, block_size=4)


def test_every_processor_field_has_a_value_that_turns_it_on():
    assert sorted(TURNED_ON) == sorted(APPLIED_TO_EVERY_REQUEST)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama whose greedy tokens vary (weights of std 0.1), no EOS."""
    path = tmp_path_factory.mktemp("generation")
    make_model(tie_word_embeddings=False).save_pretrained(path)
    return path


def with_settings(model_dir: Path, target: Path, file: str, **fields) -> Path:
    """A copy of model_dir under `target` with `fields` written into `file` (generation_config.json
    is then the only one generate reads; config.json's are read when it is absent)."""
    target.mkdir(exist_ok=True)
    for item in model_dir.iterdir():
        (target / item.name).write_bytes(item.read_bytes())
    (target / "generation_config.json").unlink(missing_ok=True)
    path = target / file
    raw = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**raw, **fields}))
    return target


@pytest.mark.parametrize("field", SHOWN)
def test_generate_applies_the_field_to_a_greedy_request(model_dir, tmp_path, field):
    """Why these fields are named: generate's greedy tokens change with them, even when the
    caller asks for do_sample=False."""
    from transformers import LlamaForCausalLM

    plain = LlamaForCausalLM.from_pretrained(with_settings(model_dir, tmp_path / "plain", "generation_config.json"))
    turned = LlamaForCausalLM.from_pretrained(with_settings(model_dir, tmp_path / "on", "generation_config.json",
                                                            **{field: TURNED_ON[field]}))
    assert hf_greedy(turned.eval(), PROMPT, 10) != hf_greedy(plain.eval(), PROMPT, 10)


@pytest.mark.parametrize("file", ["generation_config.json", "config.json"])
@pytest.mark.parametrize("field, value", [*TURNED_ON.items(), *WRONG_TYPES.items()])
def test_a_processor_turned_on_loads_with_a_warning_naming_it(model_dir, tmp_path, field, value, file):
    path = with_settings(model_dir, tmp_path / "m", file, **{field: value})
    with pytest.warns(UnappliedSettingWarning, match=rf"^{file} sets {field}=.*, which transformers' generate applies "
                                                    r"to every request .*runs without it") as caught:
        engine = LLMEngine.from_pretrained(path, CONFIG)
    assert len(caught) == 1
    request = engine.add_request(PROMPT, SamplingParams(temperature=0, max_tokens=3))
    while engine.has_unfinished():
        engine.step()
    assert len(engine.request(request).output_token_ids) == 3


def test_every_field_turned_on_is_named_in_one_warning(model_dir, tmp_path):
    path = with_settings(model_dir, tmp_path / "m", "generation_config.json", **TURNED_ON)
    with pytest.warns(UnappliedSettingWarning) as caught:
        LLMEngine.from_pretrained(path, CONFIG)
    assert len(caught) == 1
    assert all(f"{field}=" in str(caught[0].message) for field in TURNED_ON)


@pytest.mark.parametrize("field", list(TURNED_ON))
def test_a_model_in_memory_with_a_processor_turned_on_is_named(model_dir, field):
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM.from_pretrained(model_dir).eval()
    setattr(hf.generation_config, field, TURNED_ON[field])
    with pytest.warns(UnappliedSettingWarning, match=f"^the model's generation_config sets {field}="):
        LLMEngine.from_hf_model(hf, CONFIG)


def test_the_command_line_says_it_in_one_line_and_answers(model_dir, tmp_path, capsys):
    path = with_settings(model_dir, tmp_path / "m", "generation_config.json", repetition_penalty=1.3)
    write_byte_tokenizer(path)
    code = minillama.__main__.main(["--model", str(path), "--device", "cpu", "--prompt", "hi", "--max-tokens", "2"])
    captured = capsys.readouterr()
    assert code == 0 and "Traceback" not in captured.err and captured.out.strip()
    warning = [line for line in captured.err.splitlines() if "repetition_penalty" in line]
    assert warning == [f"python -m minillama: warning: generation_config.json sets repetition_penalty=1.3, {warning[0].split(', ', 1)[1]}"]


# field -> its neutral values, each of which must load (null too: transformers' defaults).
NEUTRAL = {
    "repetition_penalty": [1.0, 1], "no_repeat_ngram_size": [0], "bad_words_ids": [[]], "suppress_tokens": [[]],
    "begin_suppress_tokens": [[]], "sequence_bias": [[], {}], "min_length": [0], "min_new_tokens": [0],
    "guidance_scale": [1.0], "stop_strings": [[], ""], "token_healing": [False],
}


@pytest.mark.parametrize("file", ["generation_config.json", "config.json"])
def test_neutral_values_and_decoding_defaults_load_and_answer_as_generate(model_dir, tmp_path, file):
    """Every field null, or at a value that turns nothing on, and the decoding defaults a request
    overrides (do_sample, temperature, top_p, num_beams, max_length): the engine loads without a
    warning, and its greedy tokens are generate(do_sample=False)'s. (num_beams is a default the caller sets, as
    SamplingParams.beam_width is here.)"""
    from transformers import LlamaForCausalLM

    fields = {field: None for field in APPLIED_TO_EVERY_REQUEST}
    for field, values in NEUTRAL.items():
        for i, value in enumerate(values):
            path = with_settings(model_dir, tmp_path / f"{field}-{i}", file, **{field: value})
            with warnings.catch_warnings():
                warnings.simplefilter("error", UnappliedSettingWarning)
                LLMEngine.from_pretrained(path, CONFIG)
    decoding = dict(do_sample=True, temperature=0.6, top_p=0.9, max_length=64)
    path = with_settings(model_dir, tmp_path / "all", file, **fields, **decoding)
    engine = LLMEngine.from_pretrained(path, CONFIG)
    request = engine.add_request(PROMPT, SamplingParams(temperature=0, max_tokens=10))
    while engine.has_unfinished():
        engine.step()
    hf = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    assert list(engine.request(request).output_token_ids) == hf_greedy(hf, PROMPT, 10)
