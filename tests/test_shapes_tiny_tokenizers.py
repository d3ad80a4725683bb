"""Extreme shapes with their tokenizers, read from a directory as `--model DIR` reads them,
through the recorder, the trace file, `python -m inspector show` and `diff`, and every view.

tests/test_shapes_whole_path.py drives middling shapes with token ids and no tokenizer; here
the views and text views show the tokens of vocabularies at the edges a real checkpoint can have:

- three tokens, two of them control characters ("\\x1b", "\\x00"), one layer, one head, hidden 8;
- a byte-level vocabulary (every byte a token, as in GPT-2 and Llama 3: "\\x7f" and the
  control bytes are tokens, and a byte of a longer UTF-8 character has no text of its own),
  with 64 layers of head_dim 2, and with 64 query heads over one KV head;
- a 4-token context in blocks of 16, with max_tokens past the context and a fork.

Each is held to: no control character written raw into any HTML or figure (it drew an empty
chip, bar label or fork button), the recorder's attention equal to the engine's, every head and
layer picker the model's size, no top-k longer than the vocabulary, and `show` and `diff` naming each
listed token ('' ten times over was ten different tokens), and each beam's token its own rank.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from test_inspector_support import Checker, assert_attention_is_the_engines
from tiny_model import CHAT_TEMPLATE, write_byte_tokenizer

from inspector import CapturePolicy, DebugSession, diff_traces, format_diff, load, save, views
from inspector.trace.export_text import format_overview, format_step
from inspector.views import Selection
from minillama import EngineConfig, LLMEngine, SamplingParams

# Written raw, each of these shows as nothing: C0 but tab and newline, DEL, C1 (markup.CONTROL_CHARACTERS).
RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
BASE = dict(vocab_size=256, hidden_size=32, intermediate_size=16, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True, bos_token_id=None,
            eos_token_id=None, pad_token_id=None, initializer_range=0.1)
# name -> (tokenizer, LlamaConfig fields over BASE, block size, prompts).
SHAPES = {
    "vocab-3-control-tokens-1-head": ("control", dict(vocab_size=3, hidden_size=8, num_attention_heads=1,
                                                      num_key_value_heads=1, num_hidden_layers=1), 4,
                                      ["a\x1ba", "a\x1b\x1ba\x1b"]),
    "bytes-64-layers-head-dim-2": ("bytes", dict(num_hidden_layers=64, hidden_size=8, num_attention_heads=4,
                                                 num_key_value_heads=4, intermediate_size=8), 4, ["hello", "hi"]),
    "bytes-64-heads-mqa": ("bytes", dict(hidden_size=128, num_attention_heads=64, num_key_value_heads=1), 4,
                           ["hello", "hi"]),
    "context-4-blocks-of-16": ("bytes", dict(max_position_embeddings=4), 16, ["a", "ab"]),
}


def write_control_tokenizer(path: Path) -> None:
    """Three tokens, "a", ESC and NUL, each a character of its own (no merges)."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(vocab={"a": 0, "\x1b": 1, "\x00": 2}, merges=[], unk_token="a"))
    tokenizer.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)


@pytest.fixture(scope="module")
def shape_dir(tmp_path_factory):
    def get(name: str) -> Path:
        from transformers import LlamaConfig, LlamaForCausalLM

        tokenizer, fields, _, _ = SHAPES[name]
        path = tmp_path_factory.mktemp(name)
        torch.manual_seed(0)
        LlamaForCausalLM(LlamaConfig(**{**BASE, **fields})).save_pretrained(path)
        (write_control_tokenizer if tokenizer == "control" else write_byte_tokenizer)(path)
        return path

    return get


def record(path: Path, block_size: int, prompts: list[str]) -> tuple[DebugSession, Checker]:
    """Greedy prompts to 10 tokens (past a 4-token context), samples, a beam search and a fork,
    every request traced, the logit lens on, the top 8 kept (more than 3 tokens)."""
    engine = LLMEngine.from_pretrained(path, EngineConfig(device="cpu", num_kv_blocks=12, block_size=block_size))
    session = DebugSession(engine, CapturePolicy(attention_requests=None, logit_lens=True, top_k=8))
    checker = Checker(engine, session.recorder.traced)
    engine.add_observer(checker)
    for prompt in prompts:
        session.add(prompt, SamplingParams(temperature=0, max_tokens=10))
    session.add(prompts[-1], SamplingParams(temperature=1.0, seed=1, max_tokens=3, n=2))
    session.add(prompts[-1], SamplingParams(temperature=0, beam_width=2, max_tokens=3))  # as the CLI and the UI ask
    session.step()
    session.step()
    session.fork(0, engine.request(0).num_prompt_tokens + 1, [engine.model_config.vocab_size - 1])
    assert session.run().finished
    return session, checker


def assert_tokens_named(text: str) -> None:
    """In `show` and `diff`, a listed token is its text or, with none of its own, its id
    ("[168]"), never a bare '' (ten of those were ten different tokens)."""
    for line in text.splitlines():
        if line.lstrip().startswith(("top:", "top a:", "top b:", "logit lens:")):
            assert not re.search(r"(^|[:|] ?)'' ", line + " "), line


def strings(value: object) -> list[str]:
    """Every string in a figure's JSON (its titles, labels, hovers and texts)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


@pytest.mark.parametrize("name", list(SHAPES))
def test_a_shape_with_its_tokenizer_through_every_view_and_show(tmp_path, shape_dir, name):
    _, _, block_size, prompts = SHAPES[name]
    session, checker = record(shape_dir(name), block_size, prompts)
    m = session.engine.model_config
    assert assert_attention_is_the_engines(session, checker) > 0
    save(session.trace, tmp_path / "run.mltrace")
    trace = load(tmp_path / "run.mltrace")
    seq_ids = sorted(trace.sequences)
    selections = [Selection()] + [Selection(seq_id=s, layer=m.num_hidden_layers - 1, head=h, full_matrix=full)
                                  for s in seq_ids[:: max(1, len(seq_ids) // 3)] for h in (None, m.num_attention_heads - 1)
                                  for full in (False, True)]
    raw = set()
    for index in range(len(trace.steps)):
        shown = [views.text_html(trace, index), views.block_tables_html(trace, index),
                 views.step_details_html(trace, index), *strings(views.timeline_figure(trace, index).to_plotly_json())]
        for selection in selections if index % 3 == 0 else selections[:1]:
            shown += [views.fork_choices_html(trace, index, selection), views.branch_html(trace, index, selection)]
            for builder in (views.attention_figure, views.logits_figure, views.logits_history_figure,
                            views.logit_lens_figure, views.kv_cache_figure):
                shown += strings(json.loads(builder(trace, index, selection).to_json()))
            logits = views.logits_figure(trace, index, selection)
            assert all(len(bar.y) <= m.vocab_size for bar in logits.data if bar.type == "bar"), index
        raw |= {hit for text in shown for hit in RAW_CONTROL.findall(text)}
        assert_tokens_named(format_step(trace, index))
    assert not raw, f"control characters written raw: {sorted(raw)}"
    assert not RAW_CONTROL.search(format_overview(trace))  # the terminal's text: escapes (\\x1b)
    # Every query head of the last layer, one row each; the lens has a row per layer.
    index = max(s.index for s in trace.steps if s.token_of(0) is not None)
    heads = views.attention_figure(trace, index, Selection(seq_id=0, layer=m.num_hidden_layers - 1, head=None))
    assert list(heads.data[0].y) == [f"h{h}" for h in range(m.num_attention_heads)]
    lens = views.logit_lens_figure(trace, index, Selection(seq_id=0))
    assert len(lens.data[0].z) == m.num_hidden_layers
    # A beam's token has its own rank and probability, under the model's distribution (a beam
    # search ignores temperature and the filters): the beams kept at the first step are the top
    # two tokens, ranks 0 and 1. (Summarised as greedy, every beam read "rank 0", p of the top.)
    ranks = set()
    for step in trace.steps:
        for token in step.tokens:
            g = token.logits
            if trace.sequences[token.seq_id].params["beam_width"] == 1 or g is None:
                continue
            if token.token_id in g.top_ids:
                p = g.top_probs[g.top_ids.index(token.token_id)]
                assert (g.sampled_prob, g.sampled_rank) == (p, sum(q > p for q in g.top_probs))
            assert g.top_sampling_probs == pytest.approx(g.top_probs, abs=1e-6)
            ranks.add(g.sampled_rank)
    assert {0, 1} <= ranks
    # `diff`: a divergence planted in the file's copy at sequence 0's first token (as
    # test_diff.planted does, without its deep copy) lists both sides' top k.
    seq = trace.sequences[0]
    seq.output_ids[0] = (seq.output_ids[0] + 1) % m.vocab_size
    trace.steps[seq.token_steps[0]].token_of(0).token_id = seq.output_ids[0]
    text = format_diff(diff_traces(session.trace, trace))
    assert "top a: " in text
    assert_tokens_named(text)
