"""The logit lens: each layer's top-5, read from the residual stream after that layer, equals
transformers' hidden states of the same model through the final norm and LM head; the last
layer's is the model's own prediction; it survives a save and load, and the budget drops it."""

from __future__ import annotations

import pytest
import torch
from conftest import make_hf_model

from inspector import CapturePolicy, DebugSession, load, save
from inspector.record.lens_capture import READOUT_CHUNK_BYTES, rows_per_chunk
from minillama import EngineConfig, LLMEngine, SamplingParams


def lens_run(policy: CapturePolicy):
    hf = make_hf_model("gqa-tied-llama3")
    engine = LLMEngine.from_hf_model(hf, EngineConfig(device="cpu", num_kv_blocks=32, block_size=4))
    session = DebugSession(engine, policy)
    generator = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, 256, (n,), generator=generator).tolist() for n in (7, 5)]
    for prompt in prompts:
        session.add(prompt, SamplingParams(temperature=0, max_tokens=4))
    session.run()
    return hf, session, prompts


def hf_lens(hf, token_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' logit lens at the last position: (top-5 probs, ids) [L, 5]. Its
    hidden_states[i + 1] is the residual stream after layer i, except the last, which HF
    returns already normed."""
    with torch.no_grad():
        out = hf(torch.tensor([token_ids]), output_hidden_states=True)
        streams = torch.stack([h[0, -1] for h in out.hidden_states[1:]])  # [L, hidden]
        normed = torch.cat([hf.model.norm(streams[:-1]), streams[-1:]])
        probs = hf.lm_head(normed).float().softmax(dim=-1)
    return probs.topk(5, dim=-1)


def test_each_layers_guess_is_transformers_hidden_state_through_the_head(tmp_path):
    hf, session, prompts = lens_run(CapturePolicy(logit_lens=True, attention=False, attention_requests=(0,)))
    trace = session.trace
    seq = trace.sequences[0]
    assert seq.traced and not trace.sequences[1].traced
    checked = 0
    for i, step in enumerate(seq.token_steps):
        token = trace.steps[step].token_of(0)
        context = prompts[0] + seq.output_ids[:i]  # what the model had read when it sampled token i
        probs, ids = hf_lens(hf, context)
        assert len(token.lens.top_ids) == 2  # layers
        assert token.lens.top_ids == ids.tolist()
        torch.testing.assert_close(torch.tensor(token.lens.top_probs), probs, rtol=1e-4, atol=1e-6)
        # The last layer's guess is the model's prediction: the recorded top-k agrees.
        assert token.lens.top_ids[-1][0] == token.logits.top_ids[0] == token.token_id
        assert abs(token.lens.top_probs[-1][0] - token.logits.top_probs[0]) < 1e-5
        checked += 1
    assert checked == 4
    assert all(t.lens is None for s in trace.steps for t in s.tokens if t.seq_id == 1)  # untraced
    save(trace, tmp_path / "lens.mltrace")
    again = load(tmp_path / "lens.mltrace")
    step = seq.token_steps[2]
    assert again.steps[step].token_of(0).lens == trace.steps[step].token_of(0).lens


def test_a_vocabulary_smaller_than_the_lens_top_k(tmp_path):
    """A 4-token vocabulary: each layer's guess lists all 4 tokens (not 5), and the trace saves
    and loads."""
    hf = make_hf_model("gqa-tied-llama3", vocab_size=4)
    session = DebugSession(LLMEngine.from_hf_model(hf, EngineConfig(device="cpu", num_kv_blocks=32, block_size=4)),
                           CapturePolicy(logit_lens=True))
    session.add([1, 2, 3, 0, 1], SamplingParams(temperature=0, max_tokens=3))
    session.run()
    tokens = [token for step in session.trace.steps for token in step.tokens]
    assert len(tokens) == 3 and all(len(ids) == 4 for token in tokens for ids in token.lens.top_ids)
    save(session.trace, tmp_path / "lens.mltrace")
    again = [token.lens for step in load(tmp_path / "lens.mltrace").steps for token in step.tokens]
    assert again == [token.lens for token in tokens]


def test_the_memory_budget_drops_the_lens_before_the_logits():
    _, full, _ = lens_run(CapturePolicy(logit_lens=True, attention=False))
    per_step = 2 * (2 * 5 * 8)  # two traced sequences x layers x top-5 x (id, prob)
    _, session, _ = lens_run(CapturePolicy(logit_lens=True, attention=False,
                                           memory_budget=full.recorder.budget.used - per_step))
    trace = session.trace
    dropped = trace.dropped_from("lens")
    assert dropped is not None and trace.dropped_from("logits") is None
    assert all(t.lens is not None for s in trace.steps[:dropped] for t in s.tokens)
    assert all(t.lens is None and t.logits is not None for s in trace.steps[dropped:] for t in s.tokens)


def test_the_lens_panel_shows_the_recorded_guesses():
    from inspector.views import Selection, logit_lens_figure
    from inspector.views.colors import PROBABILITY_SCALE, contrast, scale_color

    _, session, _ = lens_run(CapturePolicy(logit_lens=True, attention=False, attention_requests=(0,)))
    trace = session.trace
    step = trace.sequences[0].token_steps[1]
    token = trace.steps[step].token_of(0)
    fig = logit_lens_figure(trace, step, Selection(seq_id=0))
    assert [list(row) for row in fig.data[0].z] == token.lens.top_probs
    # Each guess is written over its cell in black or white, whichever reads there (WCAG AA).
    words = fig.data[1]
    cells = {(x, y): p for y, row in enumerate(token.lens.top_probs) for x, p in zip(fig.data[0].x, row)}
    assert len(words.text) == len(cells) == len(words.textfont.color)
    for x, y, ink in zip(words.x, words.y, words.textfont.color):
        assert contrast(ink, scale_color(PROBABILITY_SCALE, cells[x, y])) >= 4.5
    assert f"step {step}" in fig.layout.title.text and "seq #0" in fig.layout.title.text
    untraced = logit_lens_figure(trace, step, Selection(seq_id=1))
    assert "#1 is not a traced sequence" in untraced.layout.annotations[0].text
    assert "No step yet" in logit_lens_figure(trace, -1).layout.annotations[0].text


# name -> LlamaConfig fields over test_model_shapes.BASE: what the read-out's size depends on
# (vocabulary, layers, rows of traced sequences), each at a Llama checkpoint's extreme.
LENS_SHAPES = {
    "one-layer-vocab-1000": dict(num_hidden_layers=1, vocab_size=1000),
    "vocab-32001-untied-gqa-7": dict(vocab_size=32001, tie_word_embeddings=False, hidden_size=56,
                                     num_attention_heads=7, num_key_value_heads=1),
    "vocab-128256-three-layers": dict(vocab_size=128256, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                      num_key_value_heads=1),
}


@pytest.mark.parametrize("vocab", [1, 5, 1000, 32001, 49152, 128256, 2**24])
def test_a_readout_chunk_holds_at_most_its_bytes_of_logits(vocab):
    rows = rows_per_chunk(vocab)
    assert rows >= 1 and (rows == 1 or rows * vocab * 4 <= READOUT_CHUNK_BYTES)
    assert rows_per_chunk(vocab, 4 * vocab * 3 + 1) == 3


@pytest.mark.parametrize("name", list(LENS_SHAPES))
def test_the_lens_reads_out_in_chunks_and_guesses_as_in_one_piece(name):
    """Four traced sequences over every layer: [L * 4, vocab] fp32 logits at once was the lens's
    transient, outside the memory budget (1 GiB for Llama 3's vocabulary, 32 layers and 64
    rows). Read out a few rows at a time, each call holds at most chunk_bytes of logits, and
    every layer's top 5 is the one read out whole."""
    from test_model_shapes import make_model

    fields = LENS_SHAPES[name]
    lenses = {}
    for chunk_rows in (None, 3):
        engine = LLMEngine.from_hf_model(make_model(**fields), EngineConfig(device="cpu", dtype="float32",
                                                                            num_kv_blocks=32, block_size=4))
        session = DebugSession(engine, CapturePolicy(logit_lens=True, attention=False, attention_requests=None))
        vocab = engine.model_config.vocab_size
        if chunk_rows is not None:
            session.recorder.lens.chunk_bytes = chunk_rows * vocab * 4
        seen_rows = []
        readout = engine.readout

        def counted(hidden, readout=readout, seen_rows=seen_rows):  # the engine's read-out, its rows counted
            seen_rows.append(hidden.shape[0])
            return readout(hidden)

        engine.readout = counted
        generator = torch.Generator().manual_seed(4)
        for n in (6, 3, 9, 2):
            session.add(torch.randint(0, vocab, (n,), generator=generator).tolist(),
                        SamplingParams(temperature=0, max_tokens=3))
        assert session.run().finished
        rows = fields.get("num_hidden_layers", 2) * 4  # every layer of the four sequences, in one step
        assert max(seen_rows) == (rows if chunk_rows is None else chunk_rows)
        lenses[chunk_rows] = [t.lens for step in session.trace.steps for t in step.tokens]
    assert all(lens is not None for lens in lenses[None]) and len(lenses[None]) == 12
    for whole, chunked in zip(lenses[None], lenses[3], strict=True):
        assert whole.top_ids == chunked.top_ids
        torch.testing.assert_close(torch.tensor(chunked.top_probs), torch.tensor(whole.top_probs), rtol=1e-5, atol=1e-7)
