"""Llama shapes through the whole inspector path, not the engine alone: a recorded run (chunked
prefill, prefix-cache hits, preemption, samples, a beam search and a fork), the recorder's
attention against the engine's own attention output, the trace saved and loaded, and every view
at every step, for the head, layer and vocabulary counts a view or a capture could assume.

tests/test_model_shapes.py holds the engine to transformers on these classes of shape; here
each shape is one that a panel or the recorder could get wrong while the engine is right:

- one layer (a layer slider, "the layer the lens settles at", a layer range 0..0);
- one KV head for four query heads (MQA: every query head reads KV head 0);
- as many KV heads as query heads (no GQA: the group is 1);
- a GQA group of 7 with head_dim 32 (a head count no multiple of two; 7 rows of small multiples);
- head_dim 256 set apart from hidden_size / heads (q and o wider than the residual stream);
- a 32,001-token untied vocabulary (Llama 2 with an added token: the LM head is not the
  embedding, and no power of two).
"""

from __future__ import annotations

import re

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from test_inspector_support import Checker, assert_attention_is_the_engines
from test_model_shapes import make_model

from inspector import CapturePolicy, DebugSession, load, save, views
from inspector.views import Selection
from minillama import EngineConfig, LLMEngine, SamplingParams

# name -> LlamaConfig fields over test_model_shapes.BASE (4 heads, 2 KV heads, head_dim 16, 2 layers, vocab 256).
SHAPES = {
    "one-layer": dict(num_hidden_layers=1),
    "mqa-4-to-1": dict(num_key_value_heads=1),
    "no-gqa-4-4": dict(num_key_value_heads=4),
    "gqa-7-head-dim-32": dict(hidden_size=224, num_attention_heads=7, num_key_value_heads=1),
    "explicit-head-dim-256": dict(hidden_size=48, head_dim=256, num_attention_heads=2, num_key_value_heads=1),
    "vocab-32001-untied": dict(vocab_size=32001, tie_word_embeddings=False, hidden_size=32, num_attention_heads=2,
                               num_key_value_heads=1),
}
FIGURES = (views.kv_cache_figure, views.attention_figure, views.logits_figure, views.logits_history_figure,
           views.logit_lens_figure)
PANELS = (views.text_html, views.block_tables_html, views.step_details_html)


def record(fields: dict) -> tuple[DebugSession, Checker]:
    """Four prompts sharing a 12-token prefix in a 14-block pool of 4-token blocks, prefilled in
    chunks of at most 8 tokens (the first alone, so the others hit its cached prefix; together
    they preempt); then samples of a prompt, a beam search and a fork, to the end. Every
    request traced, the logit lens on."""
    engine = LLMEngine.from_hf_model(make_model(**fields), EngineConfig(
        device="cpu", dtype="float32", num_kv_blocks=14, block_size=4, max_num_batched_tokens=8))
    session = DebugSession(engine, CapturePolicy(attention_requests=None, logit_lens=True))
    checker = Checker(engine, session.recorder.traced)
    engine.add_observer(checker)
    vocab = engine.model_config.vocab_size
    generator = torch.Generator().manual_seed(0)
    prefix = torch.randint(0, vocab, (12,), generator=generator).tolist()
    prompts = [prefix + torch.randint(0, vocab, (n,), generator=generator).tolist() for n in (3, 5, 2, 4)]
    greedy = SamplingParams(temperature=0, max_tokens=8)
    session.add(prompts[0], greedy)
    session.step()
    for prompt in prompts[1:]:
        session.add(prompt, greedy)
    assert session.run().finished
    session.add(prompts[1][:6], SamplingParams(temperature=1.0, seed=3, max_tokens=4, n=2))
    session.add(prompts[2][:5], SamplingParams(beam_width=2, max_tokens=4))
    parent = session.add(prompts[3][:9], SamplingParams(temperature=0, max_tokens=5))
    for _ in range(3):
        session.step()
    session.fork(parent, engine.request(parent).num_prompt_tokens + 1, [7])
    assert session.run().finished
    return session, checker


@pytest.mark.parametrize("name", list(SHAPES))
def test_a_shape_through_recording_saving_and_every_view(tmp_path, name):
    session, checker = record(SHAPES[name])
    trace, engine = session.trace, session.engine
    m = engine.model_config
    assert (trace.model.num_layers, trace.model.num_heads, trace.model.num_kv_heads, trace.model.head_dim,
            trace.model.vocab_size) == (m.num_hidden_layers, m.num_attention_heads, m.num_key_value_heads, m.head_dim,
                                        m.vocab_size)
    # The run did what the path is about: chunks, prefix-cache hits, a preemption, forks.
    assert engine.stats.preemptions > 0
    assert any(x.num_cached_tokens for s in trace.steps for x in s.schedule.scheduled)
    assert any(s.schedule.phase == "prefill" and sum(x.num_tokens for x in s.schedule.scheduled) == 8
               for s in trace.steps)
    assert {e.kind for e in trace.events} >= {"fork"}
    assert assert_attention_is_the_engines(session, checker) > 20 * m.num_attention_heads
    lensed = [t.lens for s in trace.steps for t in s.tokens if t.lens is not None]
    assert lensed and all(len(lens.top_ids) == m.num_hidden_layers for lens in lensed)

    save(trace, tmp_path / "run.mltrace")
    loaded = load(tmp_path / "run.mltrace")
    last_seq, last_layer, last_head = max(trace.sequences), m.num_hidden_layers - 1, m.num_attention_heads - 1
    selections = (Selection(), Selection(seq_id=0, layer=last_layer, head=None),
                  Selection(seq_id=last_seq, layer=last_layer, head=last_head),
                  Selection(seq_id=2, layer=0, head=None, full_matrix=True))
    for index in range(len(trace.steps)):
        step_text = re.compile(rf"\bstep {index}\b")
        # Every step as the page opens it; every fourth one under each selection too, and from
        # the file as from the live run (the same figure).
        for builder in FIGURES:
            for selection in selections if index % 4 == 0 else selections[:1]:
                fig = builder(trace, index, selection)
                assert step_text.search(fig.layout.title.text), (builder.__name__, index, fig.layout.title.text)
                if index % 4 == 0:
                    assert builder(loaded, index, selection).to_json() == fig.to_json(), (builder.__name__, index)
        for builder in PANELS:
            page = builder(trace, index)
            assert step_text.search(page) and builder(loaded, index) == page, (builder.__name__, index)
    # Every head of the last layer drawn once (small multiples), each row the trace's attention.
    index = max(s.index for s in trace.steps if any(x.seq_id == 0 for x in s.schedule.scheduled))
    heads = views.attention_figure(trace, index, Selection(seq_id=0, layer=last_layer, head=None))
    go.Figure(heads.to_dict())  # plotly's validation: no misspelt property
    z = np.asarray(heads.data[0].z, dtype=np.float64)
    assert list(heads.data[0].y) == [f"h{h}" for h in range(m.num_attention_heads)]
    np.testing.assert_allclose(z.sum(axis=1), 1.0, atol=1e-5)
