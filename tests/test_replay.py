"""inspector.replay: a trace's requests run again, under its own settings, changed ones, or each
alone; the model checked first (shape and weights fingerprint); older traces."""

from __future__ import annotations

import dataclasses
import json
import zipfile

import pytest
import torch
from tiny_model import write_tiny_model

from inspector import DebugSession, diff_traces, format_diff, load, replay, save
from inspector.__main__ import main
from inspector.debug.replay import lineage_roots, replay_config
from inspector.record.fingerprint import weights_fingerprint
from minillama import ConfigError, EngineConfig, InvalidRequestError, LLMEngine, SamplingParams

CPU = EngineConfig(device="cpu", num_kv_blocks=32, block_size=4)
GREEDY = SamplingParams(temperature=0.0, max_tokens=8)
SEEDED = SamplingParams(temperature=0.9, top_p=0.95, seed=7, max_tokens=8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def recorded(tiny, tmp_path_factory):
    """A saved run on the tiny model: a greedy and a seeded request, a user's fork after step 3,
    a late request with two seeded samples; loaded back from its file."""
    session = DebugSession(LLMEngine.from_pretrained(tiny, CPU))
    session.add("hello there", GREEDY)
    session.add("abc", SEEDED)
    session.run(max_steps=3)
    session.fork(0, 13, [65, 66])
    session.add("late one", SamplingParams(temperature=1.0, seed=1, n=2, max_tokens=5))
    session.run()
    path = tmp_path_factory.mktemp("run") / "run.mltrace"
    save(session.trace, path)
    return load(path)


def test_the_trace_records_what_replay_needs(recorded, tiny):
    m, e = recorded.model, recorded.engine
    assert (m.hidden_size, m.intermediate_size) == (32, 64) and len(m.weights_fingerprint) == 16
    assert (e.enforce_eager, e.fused_ops, e.seed, e.num_blocks, e.block_size) == (False, True, 0, 32, 4)
    assert replay_config(recorded, {}, print) == EngineConfig(
        device="cpu", dtype="float32", attention="cpu", block_size=4, num_kv_blocks=32, max_num_seqs=64,
        max_num_batched_tokens=4096, max_model_len=128, enable_prefix_caching=True, enforce_eager=False,
        fused_ops=True, seed=0)


def test_replay_under_its_own_settings_repeats_tokens_logits_and_schedule(recorded, tiny):
    again = replay(recorded, tiny, progress=False)
    assert [(s.parent_id, s.fork_cause, s.added_step, s.output_ids) for s in again.sequences.values()] == [
        (s.parent_id, s.fork_cause, s.added_step, s.output_ids) for s in recorded.sequences.values()]
    assert len(again.steps) == len(recorded.steps)
    for a, b in zip(recorded.steps, again.steps):
        assert [(x.seq_id, x.start, x.num_tokens) for x in a.schedule.scheduled] == [
            (x.seq_id, x.start, x.num_tokens) for x in b.schedule.scheduled]
        for ta, tb in zip(a.tokens, b.tokens, strict=True):
            assert ta.token_id == tb.token_id
            assert (ta.logits.top_ids, ta.logits.top_probs, ta.logits.entropy) == (
                tb.logits.top_ids, tb.logits.top_probs, tb.logits.entropy)
    diff = diff_traces(recorded, again)
    assert diff.equal and diff.settings == [] and diff.same_weights
    assert all(d.max_abs_delta_logp == 0 for r in diff.requests for d in r.deltas)


def test_alone_runs_each_request_with_its_forks_by_itself(recorded, tiny):
    alone = replay(recorded, tiny, alone=True, progress=False)
    roots = lineage_roots(alone)
    for step in alone.steps:  # one lineage per step: request k and its fork or samples
        assert len({roots[x.seq_id] for x in step.schedule.scheduled}) == 1
    starts = sorted(s.added_step for s in alone.sequences.values() if s.parent_id is None)
    assert starts[0] == 0 and starts[1] > 0 and starts[2] > starts[1]
    diff = diff_traces(recorded, alone)
    assert sorted(r.label for r in diff.requests) == [
        "request 0", "request 0 / fork at token 13 [65, 66]", "request 1", "request 2", "request 2 / sample 1"]
    greedy = [r for r in diff.requests if r.label == "request 0"][0]
    assert greedy.equal  # batch-invariant on the tiny model, to within what the greedy choice sees


def test_an_abort_is_replayed_before_the_same_step(tiny):
    session = DebugSession(LLMEngine.from_pretrained(tiny, CPU))
    first, second = session.add_batch(["one", "two"], GREEDY)
    session.run(max_steps=3)
    session.abort(second)
    session.run()
    again = replay(session.trace, tiny, progress=False)
    assert [(s.finish_reason, len(s.output_ids)) for s in again.sequences.values()] == [("length", 8), ("abort", 3)]
    assert [(e.step, e.kind) for e in again.events] == [(0, "add"), (0, "add"), (3, "abort")]


def _run_as_recorded(trace):
    """Each sequence's lineage, tokens and end, and each step's schedule and events: what a replay repeats."""
    sequences = [(k, s.parent_id, s.fork_cause, s.fork_position, s.output_ids, s.finish_reason)
                 for k, s in trace.sequences.items()]
    steps = [[(x.seq_id, x.start, x.num_tokens) for x in step.schedule.scheduled] for step in trace.steps]
    return sequences, steps, [(e.step, e.kind, e.seq_id) for e in trace.events]


def test_an_abort_by_a_samples_or_a_beams_own_id_is_replayed(tiny, tmp_path):
    """The engine makes samples and beams again from their request; an abort naming one (not its
    request) was taken for the abort of a fork never made and dropped, so the aborted sample ran
    on to max_tokens in the replay. A user's fork of a sample was not replayed either. Each is now
    pointed at the replay's own sample (same index) or beam (same parent, position and token)."""
    session = DebugSession(LLMEngine.from_pretrained(tiny, CPU))
    session.add("late one", SamplingParams(temperature=1.0, seed=1, n=3, max_tokens=8))
    session.add("beam me", SamplingParams(temperature=0.0, beam_width=3, max_tokens=10))
    session.run(max_steps=5)
    beams = [k for k, s in session.trace.sequences.items() if s.fork_cause == "beam" and s.finish_reason is None]
    deep = [k for k in beams if session.trace.sequences[session.trace.sequences[k].parent_id].fork_cause == "beam"]
    assert deep  # a beam forked from a beam: found through its parent, found in turn
    session.abort(2)  # the first of the request's samples (its own id; the request's is 0)
    session.fork(3, session.trace.sequences[3].fork_position + 2, [65])  # a user's fork of the other sample
    session.run(max_steps=1)
    session.abort(deep[0])  # the whole search stops
    session.run()
    path = tmp_path / "aborted.mltrace"
    save(session.trace, path)
    recorded = load(path)
    assert recorded.sequences[2].finish_reason == "abort" and len(recorded.sequences[2].output_ids) == 5
    notes: list[str] = []
    again = replay(recorded, tiny, progress=False, on_note=notes.append)
    assert _run_as_recorded(again) == _run_as_recorded(recorded) and notes == []
    assert diff_traces(recorded, again).equal
    alone = replay(recorded, tiny, alone=True, progress=False, on_note=notes.append)
    samples = [[(s.output_ids, s.finish_reason) for s in t.sequences.values() if s.group_id == 0 or s.fork_cause == "user"]
               for t in (recorded, alone)]  # the seeded samples repeat alone; the greedy search, batched, may not
    assert notes == [] and samples[0] == samples[1]
    assert [s.finish_reason for s in alone.sequences.values() if s.group_id == 1].count(None) == 0


def test_a_fork_of_a_beam_after_its_search_was_aborted_is_replayed(tiny):
    """Aborting one beam stops its search and the trace records an abort for each live beam; the
    replay called abort for each, the search's request id among them, which made the engine
    forget every beam, so a user's later fork of one (the run could: it had forgotten the
    aborted beam only) failed with UnknownRequestError, or before, was never made."""
    session = DebugSession(LLMEngine.from_pretrained(tiny, CPU))
    search = session.add("beam me", SamplingParams(temperature=0.0, beam_width=3, max_tokens=10))
    session.run(max_steps=3)
    live = [k for k, s in session.trace.sequences.items() if s.finish_reason is None and k != search]
    session.abort(live[0])
    session.fork(live[1], session.trace.sequences[live[1]].fork_position + 1, [65])
    session.run()
    assert [e.seq_id for e in session.trace.events if e.kind == "abort"] == [live[0], search, *live[1:]]
    notes: list[str] = []
    again = replay(session.trace, tiny, progress=False, on_note=notes.append)
    assert _run_as_recorded(again) == _run_as_recorded(session.trace) and notes == []


def test_the_abort_of_a_pruned_beam_stops_its_search_in_the_trace_and_the_replay(tiny, tmp_path):
    """A pruned beam its running search still keeps: its abort stops the search (LLMEngine.abort),
    and the engine forgets that beam only. The trace recorded aborts of the live beams alone, the
    search's request first, so the replay aborted the request's id, which forgets every beam:
    the user's later fork of a beam, which the run made, was never made (a note said the
    parent had finished short). The pruned beam's abort is now recorded, its end kept "pruned"."""
    session = DebugSession(LLMEngine.from_pretrained(tiny, CPU))
    search = session.add("beam me", SamplingParams(temperature=0.0, beam_width=3, max_tokens=10))
    def pruned_beams() -> list[int]:
        return [k for k, s in session.trace.sequences.items() if s.finish_reason == "pruned" and k != search]

    while not pruned_beams():
        session.step()
    pruned = pruned_beams()[0]
    live = [k for k, s in session.trace.sequences.items() if s.finish_reason is None]
    session.abort(pruned)
    session.fork(live[0], 3, [65])  # an aborted beam the engine keeps: only the pruned one was forgotten
    session.run()
    trace = session.trace
    assert [e.seq_id for e in trace.events if e.kind == "abort"] == [pruned, *live]
    assert trace.sequences[pruned].finish_reason == "pruned"
    assert next(e.message for e in trace.events if e.kind == "abort") == (
        f"request {pruned} aborted (a beam that had ended: pruned); its search stopped")
    save(trace, tmp_path / "pruned.mltrace")
    recorded = load(tmp_path / "pruned.mltrace")
    notes: list[str] = []
    again = replay(recorded, tiny, progress=False, on_note=notes.append)
    assert _run_as_recorded(again) == _run_as_recorded(recorded) and notes == []


def test_a_different_model_is_refused_before_any_step(recorded, tiny, tmp_path):
    other = LLMEngine.from_pretrained(write_tiny_model(tmp_path / "other", seed=1), CPU)
    with pytest.raises(ConfigError, match="different weights: .* fingerprint .*pass --force"):
        replay(recorded, engine=other, progress=False)
    forced = replay(recorded, engine=other, force=True, progress=False)
    assert len(forced.sequences) == len(recorded.sequences)
    shallow = LLMEngine.from_config(dataclasses.replace(other.model_config, num_hidden_layers=1), CPU)
    with pytest.raises(ConfigError, match=r"recorded on tiny\d*, this replay runs random weights \(num_layers 2 against 1\); "
                                          r"replay on the trace's model \(--model DIR\)"):
        replay(recorded, engine=shallow, force=True, progress=False)  # a shape mismatch: never forced


def test_weights_without_a_fingerprint_are_named_as_such_not_as_different(recorded, tiny, monkeypatch):
    """With tensor parallelism a process holds slices of the weights, so it makes no fingerprint:
    the replay said "different weights ... this one None"."""
    from inspector.record import recorder

    monkeypatch.setattr(recorder, "weights_fingerprint", lambda engine: None)
    with pytest.raises(ConfigError, match="this replay's weights have no fingerprint .* pass --force"):
        replay(recorded, engine=LLMEngine.from_pretrained(tiny, CPU), progress=False)


def test_an_engine_built_by_the_replay_is_closed_refused_or_done(recorded, tiny, monkeypatch):
    """Its tensor-parallel workers, if any, lived on until the garbage collector found it."""
    closed = []
    monkeypatch.setattr(LLMEngine, "close", lambda engine: closed.append(engine))
    replay(recorded, tiny, progress=False)
    with pytest.raises(ConfigError, match="its limit"):
        replay(recorded, tiny, max_steps=1, progress=False)
    given = LLMEngine.from_pretrained(tiny, CPU)
    replay(recorded, engine=given, progress=False)
    assert len(closed) == 2 and given not in closed  # an engine the caller gave is the caller's


def test_an_engine_given_shares_its_weights_and_keeps_its_build(recorded, tiny):
    engine = LLMEngine.from_pretrained(tiny, CPU)
    smaller = replay(recorded, engine=engine, num_kv_blocks=8, progress=False)
    assert smaller.engine.num_blocks == 8 and engine.step_count == 0  # a new engine over the same model
    assert replay(recorded, engine=engine, attention="cpu", progress=False).engine.attention == "cpu"  # as resolved
    plain = LLMEngine.from_pretrained(tiny, dataclasses.replace(CPU, fused_ops=False))
    assert replay(recorded, engine=plain, progress=False).engine.fused_ops is False  # the model's, not the trace's
    with pytest.raises(ConfigError, match="dtype='bfloat16': the given engine's model was built otherwise"):
        replay(recorded, engine=engine, dtype="bfloat16", progress=False)
    with pytest.raises(ConfigError, match="tensor_parallel_size=2: the given engine's model was built otherwise"):
        replay(recorded, engine=engine, tensor_parallel_size=2, progress=False)
    with pytest.raises(ConfigError, match="unknown engine setting.* kv_blocks"):
        replay(recorded, engine=engine, kv_blocks=8, progress=False)
    with pytest.raises(ConfigError, match="block_size"):
        replay(recorded, engine=engine, block_size=0, progress=False)
    with pytest.raises(InvalidRequestError, match="request #0 of the trace: the prompt has 11 tokens"):
        replay(recorded, engine=engine, max_model_len=8, progress=False)


def test_a_server_replays_step_by_step_under_its_lock_within_a_step_limit(recorded, tiny):
    """What the web UI's Compare relies on: the step lock is held around each step and each fork
    and let go in between (other users' steps go there), on_step counts the steps, and
    max_steps stops a replay that would run longer."""
    engine = LLMEngine.from_pretrained(tiny, CPU)
    held: list[str] = []

    class Recording:
        def __enter__(self) -> None:
            held.append("in")

        def __exit__(self, *exc: object) -> None:
            held.append("out")

    seen: list[tuple[int, int]] = []
    again = replay(recorded, engine=engine, progress=False, step_lock=Recording(),
                   on_step=lambda done, total: seen.append((done, total)))
    forks = sum(s.fork_cause == "user" for s in recorded.sequences.values())
    assert forks == 1 and held == ["in", "out"] * (len(again.steps) + forks)
    assert seen == [(i + 1, len(recorded.steps)) for i in range(len(again.steps))]
    with pytest.raises(ConfigError, match="the replay has run 5 steps, its limit, with requests still unfinished"):
        replay(recorded, engine=engine, progress=False, max_steps=5)
    assert len(replay(recorded, engine=engine, progress=False, max_steps=len(again.steps)).steps) == len(again.steps)


def test_a_fidelity_replay_on_the_reference_copy_repeats_the_tokens_and_measures_the_drift(recorded, tiny):
    """LLMEngine.reference_copy: the same weights in float32, every call served by the reference
    ops; replayed on it, the run keeps its tokens and its log p move by float32 rounding only."""
    engine = LLMEngine.from_pretrained(tiny, CPU)
    reference = LLMEngine.reference_copy(engine)
    assert (reference.dtype, reference.attention_backend, reference.runner.model.ops.name, reference.num_kv_blocks) == (
        torch.float32, "reference", "reference", 1)
    pairs = zip(engine.runner.model.named_parameters(), reference.runner.model.named_parameters(), strict=True)
    assert all(a == b and torch.equal(p, q) for (a, p), (b, q) in pairs)
    diff = diff_traces(recorded, replay(recorded, engine=reference, enforce_eager=True, progress=False))
    assert diff.equal and diff.same_weights
    assert {name: (a, b) for name, a, b in diff.settings}["attention"] == ("cpu", "reference")
    drift = [r.max_abs_delta_logp for r in diff.requests if r.max_abs_delta_logp is not None]
    assert drift and max(drift) < 1e-4
    # A bf16 engine's copy reads the float32 checkpoint again; one with no checkpoint (random
    # weights) widens its own, exactly (a bf16 weight is a float32 one).
    bf16 = LLMEngine.from_pretrained(tiny, EngineConfig(device="cpu", dtype="bfloat16", attention="reference",
                                                        num_kv_blocks=8, block_size=4))
    pairs = zip(engine.runner.model.parameters(), LLMEngine.reference_copy(bf16).runner.model.parameters(), strict=True)
    assert all(torch.equal(p, q) for p, q in pairs)
    random = LLMEngine.from_config(bf16.model_config, EngineConfig(device="cpu", dtype="bfloat16", num_kv_blocks=8))
    widened = LLMEngine.reference_copy(random)
    pairs = zip(random.runner.model.parameters(), widened.runner.model.parameters(), strict=True)
    assert widened.dtype == torch.float32 and all(torch.equal(p.float(), q) for p, q in pairs)


def test_the_fingerprint_is_the_same_in_float32_and_bfloat16(tiny):
    """The sample is hashed in bfloat16: a bfloat16 trace checks against a float32 replay."""
    fp32 = LLMEngine.from_pretrained(tiny, CPU)
    bf16 = LLMEngine.from_pretrained(tiny, EngineConfig(device="cpu", dtype="bfloat16", attention="reference",
                                                        num_kv_blocks=8, block_size=4))
    assert weights_fingerprint(fp32) == weights_fingerprint(bf16)
    # Computed once per model: an engine sharing the weights reuses it.
    assert weights_fingerprint(LLMEngine.sharing_weights(fp32, CPU)) == weights_fingerprint(fp32)


def test_a_schema_3_file_replays_only_when_forced_and_says_what_it_lacks(recorded, tiny, tmp_path):
    path = tmp_path / "new.mltrace"
    save(recorded, path)
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    document = json.loads(members["trace.json"])
    document["schema_version"] = 3
    for name in ("hidden_size", "intermediate_size", "weights_fingerprint"):
        del document["trace"]["model"][name]
    for name in ("enforce_eager", "fused_ops", "seed"):
        del document["trace"]["engine"][name]
    members["trace.json"] = json.dumps(document).encode()
    old_path = tmp_path / "old.mltrace"
    with zipfile.ZipFile(old_path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    old = load(old_path)
    assert old.model.weights_fingerprint is None and old.engine.seed is None
    with pytest.raises(ConfigError, match="records no weights fingerprint .* --force"):
        replay(old, tiny, progress=False)
    notes: list[str] = []
    again = replay(old, tiny, force=True, progress=False, on_note=notes.append)
    assert notes == ["the trace does not record enforce_eager, fused_ops, seed (schema before 4): replayed with "
                     "the defaults"]
    assert diff_traces(old, again).equal


@pytest.mark.slow
def test_a_smaller_kv_pool_changes_the_schedule_not_the_greedy_tokens(embedded_dir):
    """The embedded model, three greedy chat requests: with 10 blocks of 8 tokens instead of 32,
    requests wait and are preempted, and every token is still the same."""
    session = DebugSession(LLMEngine.from_pretrained(embedded_dir, EngineConfig(num_kv_blocks=32, block_size=8)))
    session.add_batch(["What is the capital of France?", "Name a colour.", "Count to five."],
                      SamplingParams(temperature=0.0, max_tokens=12), chat=True)
    session.run()
    small = replay(session.trace, embedded_dir, num_kv_blocks=10, progress=False)
    diff = diff_traces(session.trace, small)
    assert diff.equal and diff.settings == [("num_blocks", "32", "10")]
    assert diff.timings_b.preemptions > 0 and diff.timings_b.steps > diff.timings_a.steps
    assert any(r.schedule_differs for r in diff.requests)
    assert all(r.max_abs_delta_logp is not None for r in diff.requests)  # logits compared at every token
    # Why, side by side: each preemption of the small pool is among its request's causes, with
    # its step, in words (why_text); the roomy pool preempted nobody.
    for r in diff.requests:
        preempted = [(step.index, p.seq_id) for step in small.steps for p in step.schedule.preemptions]
        mine = [f"step {index}: preempted: " for index, seq_id in preempted if seq_id == r.seq_b]
        assert [c for c in r.schedule_b.causes if "preempted" in c] == [
            c for c in r.schedule_b.causes if any(c.startswith(m) for m in mine)] and len(mine) == r.schedule_b.preemptions
        assert not any("preempted" in c for c in r.schedule_a.causes)
        assert r.schedule_a.causes[0].startswith(f"step {r.schedule_a.first_step}: prefix cache: ")
    assert "why in b: step " in format_diff(diff)


def test_the_command_line_replays_alone_and_with_other_settings(recorded, tiny, tmp_path, capsys):
    source = tmp_path / "a.mltrace"
    save(recorded, source)
    out = tmp_path / "b.mltrace"
    assert main(["replay", str(source), "--model", str(tiny), "--kv-blocks", "8", "--no-prefix-caching",
                 "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"5 of 5 requests gave the same tokens as {source}; wrote {out}" in printed
    again = load(out)
    assert (again.engine.num_blocks, again.engine.prefix_caching, again.engine.block_size) == (8, False, 4)
    assert main(["diff", str(source), str(out)]) == 0
    assert "settings: num_blocks 32 -> 8; prefix_caching True -> False" in capsys.readouterr().out
    back = tmp_path / "c.mltrace"  # a switch given in the recording is turned back by its opposite
    assert main(["replay", str(out), "--model", str(tiny), "--prefix-caching", "-o", str(back)]) == 0
    assert load(back).engine.prefix_caching and load(back).engine.num_blocks == 8
    assert main(["replay", str(source), "--model", str(tiny), "--alone", "-o", str(out)]) == 0
    assert len(load(out).steps) > len(recorded.steps)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_replay_on_cuda_in_bfloat16_through_cuda_graphs(tiny_model_dir, tmp_path):
    """A bf16 run on the GPU (Triton attention, decode through CUDA graphs) replays exactly under
    its own settings, gives the same greedy tokens eagerly, and a float32 replay under the
    reference attention (the fidelity check) moves the log-probabilities by little."""
    path, _ = tiny_model_dir("gqa-tied-llama3")
    config = EngineConfig(device="cuda", dtype="bfloat16", attention="triton", num_kv_blocks=64, block_size=16,
                          max_num_seqs=8)
    session = DebugSession(LLMEngine.from_pretrained(path, config))
    assert session.engine.runner.graphs
    session.add([(5 * i + 1) % 256 for i in range(37)], GREEDY)
    session.add([(3 * i + 2) % 256 for i in range(20)], SEEDED)
    session.run(max_steps=3)
    session.add([(9 * i + 4) % 256 for i in range(9)], GREEDY)
    session.run()
    save(session.trace, tmp_path / "gpu.mltrace")
    recorded = load(tmp_path / "gpu.mltrace")
    again = diff_traces(recorded, replay(recorded, path, progress=False))
    assert again.equal and all(d.max_abs_delta_logp == 0 for r in again.requests for d in r.deltas)
    eager = diff_traces(recorded, replay(recorded, path, enforce_eager=True, progress=False))
    assert all(r.divergence is None for r in eager.requests if r.label != "request 1")  # the greedy ones
    fidelity = diff_traces(recorded, replay(recorded, path, attention="reference", dtype="float32", progress=False))
    assert ("dtype", "bfloat16", "float32") in fidelity.settings
    deltas = [d.max_abs_delta_logp for r in fidelity.requests for d in r.deltas if d.max_abs_delta_logp is not None]
    assert deltas and max(deltas) < 0.5
    # The web UI's fidelity check: the same replay on the engine's reference copy (float32, eager).
    reference = LLMEngine.reference_copy(session.engine)
    assert (reference.device.type, reference.dtype, reference.attention_backend) == ("cuda", torch.float32, "reference")
    copied = diff_traces(recorded, replay(recorded, engine=reference, enforce_eager=True, progress=False))
    assert [r.divergence is None for r in copied.requests] == [r.divergence is None for r in fidelity.requests]
    moved = [d.max_abs_delta_logp for r in copied.requests for d in r.deltas if d.max_abs_delta_logp is not None]
    assert moved and abs(max(moved) - max(deltas)) < 1e-3
