"""Prompts that are not valid text (lone surrogates, undecodable bytes) are refused with
InvalidRequestError naming the character, on an engine with a real tokenizer, with and without
the chat template; before the check, the tokenizer raised `TypeError: TextEncodeInput must be
...`. Valid non-ASCII text still runs."""

from __future__ import annotations

import pytest
from tiny_model import write_tiny_model

from minillama import LLM, EngineConfig, InvalidRequestError, SamplingParams

BAD_TEXT = {
    "lone-surrogate": ("abc\ud800", r"character 3 is U\+D800"),
    "undecodable-bytes": ("\udcff\udcfe caf\udce9", "character 0 is the byte 0xff"),
    "byte-at-the-end": ("caf\udce9", "character 3 is the byte 0xe9"),
    "low-surrogate-alone": ("\udfff", r"character 0 is U\+DFFF"),
}


@pytest.fixture(scope="module")
def llm(tmp_path_factory) -> LLM:
    path = write_tiny_model(tmp_path_factory.mktemp("tiny-tok"))
    return LLM(path, EngineConfig(device="cpu", num_kv_blocks=32, block_size=4))


@pytest.mark.parametrize("chat", [False, True], ids=["plain", "chat"])
@pytest.mark.parametrize("prompt, message", BAD_TEXT.values(), ids=BAD_TEXT.keys())
def test_text_that_is_not_unicode_is_refused_naming_the_character(llm, prompt, message, chat):
    with pytest.raises(InvalidRequestError, match=message):
        llm.engine.add_request(prompt, SamplingParams(max_tokens=2), chat=chat)
    assert llm.engine.sequences == {} and not llm.engine.has_unfinished()


def test_a_bad_prompt_in_a_batch_queues_none_of_it(llm):
    with pytest.raises(InvalidRequestError, match="character 1"):
        llm.generate(["fine", "a\ud800", "also fine"], SamplingParams(max_tokens=2))
    assert llm.engine.sequences == {} and not llm.engine.has_unfinished()


def test_valid_non_ascii_text_runs(llm):
    [completion] = llm.generate(["café 日本 🙂"], SamplingParams(temperature=0, max_tokens=3), chat=True)
    assert len(completion.token_ids) == 3


def test_generate_wants_a_list_of_prompts(llm):
    with pytest.raises(InvalidRequestError, match=r"a list of prompts \(for one, \[prompt\]\), not str"):
        llm.generate("hello")
    with pytest.raises(InvalidRequestError, match="2 prompts but 1 SamplingParams"):
        llm.generate(["a", "b"], [SamplingParams()])
