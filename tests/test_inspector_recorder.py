"""The Recorder against the engine: what it wrote is what the engine did.

The invariant tests run on two recorded runs: a tiny random model, and the embedded
SmolLM2-135M (30 layers, GQA 9/3), both with preemption and prefix-cache hits, and the tiny
model again with its prompts split into chunks over several prefill steps."""

from __future__ import annotations

import pytest
import torch
from conftest import make_hf_model
from test_inspector_support import TINY_PARAMS, assert_logits_summaries_match, record_embedded_run, record_tiny_run

from inspector import CapturePolicy, DebugSession, NotRecorded, Recorder, TextMatches, Trace
from inspector.record.kv_snapshot import kv_snapshot_bytes
from inspector.record.logits_summary import summary_bytes
from inspector.trace.attention_rows import mass_per_block
from minillama import EngineConfig, LLMEngine, SamplingParams
from minillama.engine import block_pool


@pytest.fixture(scope="module")
def embedded(embedded_dir):
    return record_embedded_run(embedded_dir)


@pytest.fixture(scope="module", params=["tiny", "tiny-chunked-prefill", "embedded"])
def run(request):
    if request.param == "tiny":
        return record_tiny_run()
    if request.param == "tiny-chunked-prefill":  # prompts of 14 to 17 tokens, 6 a step
        return record_tiny_run(max_num_batched_tokens=6)
    return request.getfixturevalue("embedded")


def test_the_run_preempts_and_hits_the_prefix_cache(run):
    trace, seen = run.session.trace, run.checker.steps
    assert len(trace.steps) == len(seen)
    assert any(s.schedule.preempted for s in trace.steps)
    assert any(x.num_cached_tokens for s in trace.steps for x in s.schedule.scheduled)
    for step, checked in zip(trace.steps, seen):
        assert step.schedule.preempted == checked.preempted
        assert {x.seq_id: x.num_cached_tokens for x in step.schedule.scheduled if x.num_cached_tokens} == checked.cached
        assert {x.seq_id: (x.start, x.start + x.num_tokens) for x in step.schedule.scheduled} == checked.scheduled


def test_every_generated_token_is_in_exactly_one_step(run):
    trace = run.session.trace
    for seq_id in run.ids:
        from_steps = [t.token_id for s in trace.steps for t in s.tokens if t.seq_id == seq_id]
        assert from_steps == run.engine.sequences[seq_id].output_token_ids
        assert trace.sequences[seq_id].output_ids == from_steps
        assert trace.sequences[seq_id].finish_reason == run.engine.sequences[seq_id].finish_reason
    for step in trace.steps:
        ids = [t.seq_id for t in step.tokens]
        assert len(ids) == len(set(ids))


def test_kv_snapshots_agree_with_the_block_manager(run):
    trace, seen = run.session.trace, run.checker.steps
    bs = trace.engine.block_size
    finished: set[int] = set()
    for step, checked in zip(trace.steps, seen):
        kv = step.kv
        finished |= set(checked.finished)
        assert kv.block_tables() == checked.tables
        assert kv.num_blocks == trace.engine.num_blocks and kv.num_free == checked.num_free
        entries = {e.block_id: e for e in kv.entries()}
        assert list(entries) == sorted(entries)
        assert {b: e.ref_count for b, e in entries.items() if e.ref_count} == checked.ref_counts
        # The pools are small: every cached free block is listed.
        assert kv.cached_free_listed and kv.num_cached_free == len(checked.cached_free)
        assert {b for b, e in entries.items() if not e.ref_count and e.cached} == checked.cached_free
        hit_blocks = {b for x in step.schedule.scheduled for b in x.block_table[: x.num_cached_tokens // bs]}
        assert {b for b, e in entries.items() if e.hit} == hit_blocks
        # Recorded: the blocks held, those hit in this step, the cached free ones; nothing else.
        assert entries.keys() == kv.owners().keys() | hit_blocks | checked.cached_free
        for e in entries.values():
            assert e.ref_count == len(e.owners)  # ref counts = number of owners
            assert not finished & set(e.owners)  # no finished sequence owns a block
            assert 0 <= e.fill <= bs and (e.fill == 0 or e.owners or e.cached)
            assert kv.entry(e.block_id) == e
        assert all(kv.entry(b) is None for b in set(range(kv.num_blocks)) - entries.keys())


def record_two_short_requests(num_kv_blocks: int) -> tuple[LLMEngine, Trace]:
    """Two 10-token prompts sharing 8 tokens, 6 tokens each, in 4-token blocks, no attention."""
    engine = LLMEngine.from_hf_model(
        make_hf_model("gqa-tied-llama3"), EngineConfig(device="cpu", num_kv_blocks=num_kv_blocks, block_size=4)
    )
    session = DebugSession(engine, CapturePolicy(attention=False))
    session.add(list(range(1, 11)), SamplingParams(temperature=0, max_tokens=6))
    session.step()  # the second prompt then hits the first's cached blocks
    session.add([*range(1, 9), 20, 21], SamplingParams(temperature=0, max_tokens=6))
    assert session.run().finished
    return engine, session.trace


def num_cached_free(engine: LLMEngine) -> int:
    """Counted the slow way, over the whole pool."""
    bm = engine.block_manager
    return sum(not b.ref_count and b.hash is not None and bm.hash_to_block_id.get(b.hash) == b.block_id
               for b in bm.blocks)


def test_a_large_pool_records_only_the_blocks_involved():
    """A GPU's pool has about 131,000 blocks: each snapshot records (and so costs) only the few
    blocks in use, hit or cached, never one entry per block of the pool."""
    engine, trace = record_two_short_requests(100_000)
    assert any(x.num_cached_tokens for s in trace.steps for x in s.schedule.scheduled)
    for step in trace.steps:
        kv = step.kv
        assert kv.num_blocks == 100_000 and kv.num_used <= 8 and kv.cached_free_listed
        assert kv.block_ids.numel() <= kv.num_used + kv.num_cached_free <= 12
        assert kv_snapshot_bytes(kv) < 400
    last = trace.steps[-1].kv
    assert last.num_used == 0 and last.num_cached_free == last.block_ids.numel() == num_cached_free(engine) > 0
    assert last.cached.all()


def test_cached_free_blocks_past_the_limit_are_counted_not_listed(monkeypatch):
    monkeypatch.setattr(block_pool, "MAX_LISTED_CACHED_FREE", 2)
    engine, trace = record_two_short_requests(64)
    for step in trace.steps:
        kv = step.kv
        assert kv.cached_free_listed == (kv.num_cached_free <= 2)
        listed = [e for e in kv.entries() if not e.ref_count and e.cached and not e.hit]
        assert len(listed) == (kv.num_cached_free if kv.cached_free_listed else 0)
    last = trace.steps[-1].kv
    assert not last.cached_free_listed and last.num_cached_free == num_cached_free(engine) > 2
    assert last.block_ids.numel() == 0


def test_a_request_that_fills_a_block_in_its_last_step_is_recorded_without_prefix_caching():
    """Its last step fills block 0 and frees it: the step's snapshot is read again after the
    free, and nothing is left to mark cached (the pool is empty, no prefix cache to list)."""
    hf = make_hf_model("gqa-tied-llama3")
    engine = LLMEngine.from_hf_model(hf, EngineConfig(device="cpu", dtype="float32", num_kv_blocks=8, block_size=4,
                                                      enable_prefix_caching=False))
    session = DebugSession(engine)
    session.add([1, 2, 3], SamplingParams(temperature=0, max_tokens=2))  # the decode computes position 3
    assert session.run().finished
    last = session.trace.steps[-1].kv
    assert last.num_used == 0 and last.block_ids.numel() == 0


def test_attention_from_stored_qk_reproduces_the_engines_output(run):
    """softmax(q . K * scale) @ V, from the recorded Q/K, equals each layer's attention output,
    also for a sequence whose prefix keys were read from the cache."""
    trace, seen = run.session.trace, run.checker.steps
    group = trace.model.num_heads // trace.model.num_kv_heads
    traced = sorted(trace.attention)
    assert len(traced) == 2 and traced == sorted(run.session.recorder.traced)
    assert any(s.cached.get(traced[1]) for s in seen)  # its first keys came from the prefix cache
    compared = 0
    for index, checked in enumerate(seen):
        for (layer, seq_id), (output, values) in checked.attention.items():
            store = trace.attention[seq_id]
            start, end = checked.scheduled[seq_id]
            for pos in range(start, end):
                if store.q_step[pos] != index:
                    continue  # recomputed later: the store holds the later computation
                for head in range(trace.model.num_heads):
                    probs = trace.attention_row(seq_id, layer, head, pos)  # [pos + 1]
                    ours = probs @ values[: pos + 1, head // group].float()  # [D]
                    torch.testing.assert_close(ours, output[pos - start, head], atol=1e-5, rtol=1e-5)
                    compared += 1
    assert compared > 100


def test_attention_rows_sum_to_one_and_cached_positions_have_no_query(run):
    trace = run.session.trace
    for seq_id, store in trace.attention.items():
        for pos in range(store.length):
            if store.q_step[pos] < 0:
                with pytest.raises(NotRecorded, match="prefix cache"):
                    trace.attention_row(seq_id, 0, 0, pos)
                continue
            for layer in store.layers:
                probs = trace.attention_row(seq_id, layer, 2, pos)
                assert probs.shape == (pos + 1,)
                torch.testing.assert_close(probs.sum(), torch.tensor(1.0))
                computed = trace.steps[int(store.q_step[pos])].schedule.scheduled  # the step of the query
                table = next(x.block_table for x in computed if x.seq_id == seq_id)
                mass = mass_per_block(probs, table, trace.engine.block_size)
                assert abs(sum(mass.values()) - 1) < 1e-5 and len(mass) == pos // trace.engine.block_size + 1
    hit = sorted(trace.attention)[1]
    cached = next(x.num_cached_tokens for s in trace.steps for x in s.schedule.scheduled if x.seq_id == hit)
    assert cached > 0 and (trace.attention[hit].q_step[:cached] == -1).all()  # its cached prefix
    untraced = next(i for i in run.ids if i not in trace.attention)
    with pytest.raises(NotRecorded, match="no recorded queries"):
        trace.attention_row(untraced, 0, 0, 0)


def test_logits_summaries_match_the_engines_logits(run):
    assert_logits_summaries_match(run)


def test_timings_are_recorded(run):
    for step in run.session.trace.steps:
        t = step.timings
        assert t.forward_ms > 0 and t.wall_ms >= t.record_ms > 0
    starts = [s.timings.start_ms for s in run.session.trace.steps]
    assert starts == sorted(starts)


def test_a_tiny_budget_drops_attention_first_then_logits_and_the_run_completes():
    budget = 20_000  # the first prompt's Q/K fit (11.6 kB), the third's do not
    full = record_tiny_run()
    tight = record_tiny_run(CapturePolicy(memory_budget=budget))
    trace = tight.session.trace
    attention_from, logits_from = trace.dropped_from("attention"), trace.dropped_from("logits")
    assert attention_from is not None and logits_from is not None and 0 < attention_from < logits_from
    assert [e.what for e in trace.events if e.kind == "drop"] == ["attention", "logits"]
    # Nothing droppable is recorded from its drop on; what was kept before stays.
    assert all(not s.attention_seqs for s in trace.steps[attention_from:])
    assert trace.steps[0].attention_seqs == [tight.ids[0]] and list(trace.attention) == [tight.ids[0]]
    assert all(t.logits is None for s in trace.steps[logits_from:] for t in s.tokens)
    assert all(t.logits is not None for s in trace.steps[:logits_from] for t in s.tokens)
    kept = sum(s.q.nbytes + s.k.nbytes + s.q_step.nbytes for s in trace.attention.values())
    kept += sum(summary_bytes(1, 10) for s in trace.steps for t in s.tokens if t.logits is not None)
    assert kept <= budget
    # Recording never changes what the engine does.
    assert len(trace.steps) == len(full.session.trace.steps)
    for a, b in zip(full.ids, tight.ids):
        assert full.engine.sequences[a].output_token_ids == tight.engine.sequences[b].output_token_ids


def test_no_attention_policy_keeps_the_hook_off():
    run = record_tiny_run(CapturePolicy(attention=False))
    assert run.session.trace.attention == {}
    recorder = run.session.recorder
    assert not (recorder.wants_attention or recorder.wants_queries or recorder.wants_layers)
    assert all(not s.attention_seqs for s in run.session.trace.steps)


def test_layer_selection_captures_only_those_layers():
    run = record_tiny_run(CapturePolicy(layers=(1,)))
    store = next(iter(run.session.trace.attention.values()))
    assert store.layers == [1] and store.q.shape[0] == 1
    with pytest.raises(NotRecorded, match="layer 0 was not captured"):
        run.session.trace.attention_row(store.seq_id, 0, 0, 20)


def test_run_stops_where_the_answer_says_paris(embedded):
    trace, stop = embedded.session.trace, embedded.stops[0]
    assert isinstance(stop.breakpoint, TextMatches) and "'Paris'" in stop.reason
    paris = embedded.ids[0]
    at = next(s for s in trace.sequences[paris].token_steps if "Paris" in trace.text_until(paris, s))
    assert len(trace.steps[: at + 1]) == 1 + stop.steps  # one step before the run, then the run's
    assert "Paris" in trace.sequences[paris].text and trace.sequences[paris].chat is True
    assert trace.sequences[paris].prompt_text == "What is the capital of France?"
    assert trace.steps[at].token_of(paris).logits.top_texts[0] == trace.steps[at].token_of(paris).text_delta


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[
    pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")])])
def test_a_record_completed_during_the_next_step_equals_one_completed_at_once(device):
    """Without a reader, a step's record is completed during the next step's forward (on a GPU
    the host is free then); reading recorder.trace completes it at once. Both give one record,
    and the same one, while a sampled token's rank still comes from its own step's logits (on a
    GPU the next forward overwrites the engine's logits buffer before the late completion)."""

    def recorded(read_every_step: bool) -> Trace:
        hf = make_hf_model("gqa-tied-llama3")
        engine = LLMEngine.from_hf_model(hf, EngineConfig(device=device, dtype="float32", num_kv_blocks=14, block_size=4))
        recorder = Recorder(engine, CapturePolicy(top_k=3, attention_requests=(0,)))
        engine.add_observer(recorder)
        generator = torch.Generator().manual_seed(0)
        for n, params in zip((15, 17, 14), TINY_PARAMS):
            engine.add_request(torch.randint(0, 256, (n,), generator=generator).tolist(), params)
        steps = 0
        while engine.has_unfinished():
            engine.step()
            steps += 1
            assert recorder.num_steps == steps
            if read_every_step:
                assert len(recorder.trace.steps) == steps
        return recorder.trace

    late, at_once = recorded(read_every_step=False), recorded(read_every_step=True)
    assert len(late.steps) == len(at_once.steps) > 10
    assert any(t.logits.sampled_rank >= 3 for s in late.steps for t in s.tokens)  # outside the top 3
    for a, b in zip(late.steps, at_once.steps):
        assert (a.index, a.schedule, a.tokens, a.attention_seqs) == (b.index, b.schedule, b.tokens, b.attention_seqs)
        assert all(torch.equal(x, y) for x, y in zip(vars(a.kv).values(), vars(b.kv).values()) if isinstance(x, torch.Tensor))
    assert [vars(s) for s in late.sequences.values()] == [vars(s) for s in at_once.sequences.values()]


@pytest.mark.parametrize("prompt", ["café 🦙 日本語 مرحبا", "emoji only: 🦙🦙👨‍👩‍👧", "🦙 first, then text"])
def test_prompt_token_texts_are_what_each_token_completes(embedded_dir, prompt):
    """A prompt's token texts are found as output text is: a token that ends inside a character
    has none, the token that completes it the whole character (decoded alone, each piece showed
    as U+FFFD); special tokens keep their text; together they are the prompt's text."""
    engine = LLMEngine.from_pretrained(embedded_dir, EngineConfig(device="cpu", num_kv_blocks=16))
    session = DebugSession(engine)
    seq = session.trace.sequences[session.add(prompt, SamplingParams(max_tokens=1), chat=True)]
    assert "".join(seq.prompt_tokens) == engine.tokenizer.decode(seq.prompt_ids)
    assert "\ufffd" not in "".join(seq.prompt_tokens) and "<|im_start|>" in seq.prompt_tokens
    assert "" in seq.prompt_tokens  # 🦙 takes more than one token


def test_a_byte_piece_among_the_alternatives_has_no_text_of_its_own(embedded_dir):
    """The top-k alternatives are decoded one token alone: a byte piece of a character decoded to
    U+FFFD, and the Next token chart showed several different tokens as the same "�". Such a
    token has no text of its own (""), and the views show its id."""
    from inspector.record.token_texts import TokenTexts

    engine = LLMEngine.from_pretrained(embedded_dir, EngineConfig(device="cpu", num_kv_blocks=16))
    pieces = [i for i in engine.tokenizer.encode("🦙 ש", add_special_tokens=False)
              if "\ufffd" in engine.tokenizer.decode([i])]
    texts = TokenTexts(engine.tokenizer)
    assert pieces and all(texts[i] == "" for i in pieces)
    assert texts[engine.tokenizer.encode(" Paris", add_special_tokens=False)[0]] == " Paris"
