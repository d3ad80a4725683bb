"""Real recordings that the trace rules (inspector/trace/validate*.py) once refused, and a
seeded fuzzer over many varied runs of the tiny model: each trace must validate, save and load.

A rule stricter than the engine makes a real run unsaveable (Save trace, Share link and
`python -m inspector record` refuse it, and the run is lost); the regressions below are the
smallest runs that found one.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import zipfile

import pytest
import torch
from conftest import make_hf_model
from trace_fuzz import Features, fuzz_run

from inspector import CapturePolicy, DebugSession, TraceError, load, replay, save
from inspector.trace.validate import validate_trace
from minillama import ConfigError, EngineConfig, InvalidRequestError, LLMEngine, SamplingParams


@pytest.fixture
def one_thread():
    """The tiny model gains nothing from threads, and on a busy 2-core machine torch's
    threads contending made the runs ten times slower (3 minutes for 20 seconds of work)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _saved_and_loaded(session: DebugSession, tmp_path) -> None:
    save(session.trace, tmp_path / "run.mltrace")  # validated whole, as load() does
    loaded = load(tmp_path / "run.mltrace")
    assert (len(loaded.steps), len(loaded.sequences)) == (len(session.trace.steps), len(session.trace.sequences))


def test_a_search_readmitted_past_the_token_budget_records_chunks_of_no_tokens(tmp_path, one_thread):
    """A beam search preempted whole comes back whole, its beams side by side; on a budget of 4
    tokens the first beam takes them all, and the others, admitted, running, compute nothing
    in that step: their chunks say the budget left them 0 tokens. The loader refused those
    chunks as naming sequences the step did not schedule, so the run could not be saved."""
    engine = LLMEngine.from_hf_model(make_hf_model("gqa-tied-llama3"), EngineConfig(
        device="cpu", dtype="float32", num_kv_blocks=8, block_size=4, max_num_batched_tokens=4))
    session = DebugSession(engine, CapturePolicy(attention=False))
    generator = torch.Generator().manual_seed(0)
    session.add(torch.randint(0, 256, (8,), generator=generator).tolist(), SamplingParams(temperature=0, max_tokens=16))
    session.add(torch.randint(0, 256, (3,), generator=generator).tolist(), SamplingParams(max_tokens=6, beam_width=3))
    assert session.run().finished
    trace = session.trace
    idle = [(step, c) for step in trace.steps for c in step.schedule.chunks if c.budget_left == 0]
    assert idle and {p.rule for step in trace.steps for p in step.schedule.preemptions} == {"whole-search"}
    _saved_and_loaded(session, tmp_path)
    # Still refused: a chunk of 0 tokens for a sequence the step ran, and one for a sequence it
    # did not admit.
    step, chunk = idle[0]
    ran = step.schedule.scheduled[0].seq_id
    for seq_id in (ran, next(i for i in trace.sequences if i not in step.schedule.running)):
        edited = copy.deepcopy(trace)
        chunks = edited.steps[step.index].schedule.chunks
        chunks[chunks.index(chunk)] = dataclasses.replace(chunk, seq_id=seq_id)
        with pytest.raises(TraceError, match=f"step {step.index}: .*chunk"):
            validate_trace(edited)


# Seeds of tests/trace_fuzz.py's runs that together cover every feature below; picked from a
# few hundred fuzzed locally, for a test of some 20 seconds.
SEEDS = (*range(48), 77, 78, 87, 100)


def test_varied_recordings_validate_save_and_load(tmp_path, one_thread):
    total = Features()
    for seed in SEEDS:
        session, features = fuzz_run(seed)
        try:
            _saved_and_loaded(session, tmp_path)
        except TraceError as error:
            raise AssertionError(f"fuzz_run({seed}): {error}") from None
        total.add(features)
    # What the seeds must keep covering, else the test would pass covering nothing.
    assert set(total.rules) == {"latest-arrival", "whole-search", "search-forks"}, total.rules
    assert set(total.forks) == {"user", "sample", "beam"}, total.forks
    assert set(total.finishes) >= {"length", "stop", "abort", "pruned"}, total.finishes
    assert min(total.prefix_hits, total.chunks, total.idle_chunks, total.prunes, total.aborts, total.lens,
               total.attention, total.overlapped) > 0, total


def _as_run(trace) -> tuple[list, list]:
    """Each sequence's lineage, tokens and end, and each step's schedule: what a replay repeats."""
    return ([(k, s.parent_id, s.fork_cause, s.output_ids, s.finish_reason) for k, s in trace.sequences.items()],
            [[(x.seq_id, x.start, x.num_tokens) for x in step.schedule.scheduled] for step in trace.steps])


def test_every_fuzzed_run_replays_exactly(one_thread):
    """The users' aborts and forks in these runs name samples and beams too (by their own ids,
    after their search was aborted): the replay took an abort of a sample for one of a fork
    never made (seed 13's aborted sample ran 37 tokens, 70 steps for 34), and calling abort for
    each beam a search's abort had stopped made the engine forget a beam a later fork came from
    (seed 41: UnknownRequestError)."""
    for seed in SEEDS:
        session, _ = fuzz_run(seed)
        notes: list[str] = []
        again = replay(session.trace, engine=session.engine, progress=False, on_note=notes.append)
        assert (_as_run(again), notes) == (_as_run(session.trace), []), f"fuzz_run({seed})"


@pytest.mark.parametrize("by", ["request", "beam"])
def test_aborting_a_search_ends_every_live_beam(tmp_path, one_thread, by):
    """Any beam's id stops its whole search (LLMEngine.abort); the trace recorded the abort of
    that one id only, and left the search's other live beams running forever (finish_reason
    None) in a trace whose run had finished."""
    engine = LLMEngine.from_hf_model(make_hf_model("gqa-tied-llama3"), EngineConfig(
        device="cpu", dtype="float32", num_kv_blocks=32, block_size=4))
    session = DebugSession(engine, CapturePolicy(attention=False))
    prompt = torch.randint(0, 256, (6,), generator=torch.Generator().manual_seed(0)).tolist()
    search = session.add(prompt, SamplingParams(max_tokens=8, beam_width=3))
    for _ in range(3):
        session.step()
    live = [i for i, seq in session.trace.sequences.items() if seq.finish_reason is None]
    assert len(live) == 3
    session.abort(search if by == "request" else max(live))
    assert session.run().finished
    assert {session.trace.sequences[i].finish_reason for i in live} == {"abort"}
    _saved_and_loaded(session, tmp_path)


@pytest.mark.parametrize("seed", [1041, 1153])
def test_a_decode_step_that_only_preempts_admits_what_it_freed(seed, one_thread):
    """Runs that meet a decode step whose one running sequence, the latest arrival, preempts
    itself for a block a sample waiting for a seat holds. The plan ran nothing and the engine
    dropped it: run() stopped short of the end, and the trace lacked the preemption (no
    Preemption breakpoint fired). The step now admits what the preemption freed room for
    (minillama/engine/scheduler.py); fuzz_run asserts that one run() finishes."""
    session, _ = fuzz_run(seed)
    recorded = sum(len(step.schedule.preempted) for step in session.trace.steps)
    assert recorded == session.engine.stats.preemptions > 0


def _edited_copy(saved, out, edit) -> None:
    """A copy of the saved trace file whose trace.json `edit` changed in place."""
    with zipfile.ZipFile(saved) as zf:
        document, tensors = json.loads(zf.read("trace.json")), zf.read("tensors.safetensors")
    edit(document["trace"])
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("trace.json", json.dumps(document))
        zf.writestr("tensors.safetensors", tensors)


@pytest.mark.timeout(240)
def test_a_hostile_trace_of_forks_and_aborts_replays_or_is_refused(tmp_path, one_thread):
    """The replay points a trace's aborts and forks of samples and beams at its own remakes,
    walking chains of recorded forks: a file whose fork and abort events name other sequences,
    none, a parent at or after its child, or another cause is refused at load, or replays to its
    end (noting what it could not repeat) or stops with the replay's own errors; never another
    exception, a hang or a walk without end."""
    for seed in (13, 41):
        session, _ = fuzz_run(seed)
        saved = tmp_path / f"{seed}.mltrace"
        save(session.trace, saved)
        ids = sorted(session.trace.sequences)
        edits = []  # (event index, field, value): seq_id the event's, any other its fork's
        for i, event in enumerate(session.trace.events):
            if event.kind not in ("fork", "abort"):
                continue
            edits += [(i, "seq_id", 10_000), (i, "seq_id", ids[0])]  # names no sequence, or another
            if event.fork is not None:
                edits += [(i, "parent_id", event.seq_id), (i, "parent_id", ids[-1]),  # itself, one after it
                          (i, "cause", "beam"), (i, "cause", "sample")]
        replayed = 0
        for n, (i, name, value) in enumerate(edits):
            path = tmp_path / f"{seed}-{n}.mltrace"
            _edited_copy(saved, path, lambda trace, i=i, name=name, value=value: (
                trace["events"][i] if name == "seq_id" else trace["events"][i]["fork"]).__setitem__(name, value))
            try:
                trace = load(path)
            except TraceError:
                continue
            try:
                replay(trace, engine=session.engine, progress=False, on_note=lambda _: None)
            except (ConfigError, InvalidRequestError):
                pass
            replayed += 1
        assert replayed > 0, "every edit was refused at load: the replay's own paths went untried"
