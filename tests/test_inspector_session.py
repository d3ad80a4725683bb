"""Breakpoints fire where their condition holds and only there; DebugSession queues batches
all or nothing, runs to breakpoints (at once, or a step per next()), travels over the recorded
steps, and resets."""

from __future__ import annotations

import copy
import gc
import sys

import pytest
import torch
from conftest import make_hf_model
from test_inspector_support import record_tiny_run

from inspector import (
    ArgumentError,
    AtStep,
    Breakpoint,
    DebugSession,
    EntropyAbove,
    Hit,
    KVUsageAbove,
    Preemption,
    PrefixCacheHit,
    RunResult,
    SampledProbBelow,
    SequenceFinished,
    TextMatches,
)
from minillama import EngineConfig, LLMEngine, SamplingParams
from minillama.errors import InvalidRequestError


@pytest.fixture(scope="module")
def run():
    return record_tiny_run()


def fired(breakpoint, trace) -> list[int]:
    return [s.index for s in trace.steps if breakpoint.check(trace, s) is not None]


def test_condition_breakpoints_fire_exactly_where_the_engine_says(run):
    trace, seen = run.session.trace, run.checker.steps
    steps = range(len(seen))
    assert fired(AtStep(5), trace) == [5]
    assert fired(Preemption(), trace) == [i for i in steps if seen[i].preempted] != []
    assert fired(PrefixCacheHit(), trace) == [i for i in steps if seen[i].cached] != []
    assert fired(SequenceFinished(), trace) == [i for i in steps if seen[i].finished]
    last = run.ids[-1]
    assert fired(SequenceFinished(last), trace) == [i for i in steps if last in seen[i].finished]
    # From the engine's own numbers: blocks in use, and the raw logits of each drawn token.
    nb = trace.engine.num_blocks
    usage = [100 * (nb - s.num_free) / nb for s in seen]
    assert fired(KVUsageAbove(80), trace) == [i for i in steps if usage[i] > 80] != []
    entropy = [[-(p * p.log()).sum().item() for p in map(lambda x: x.softmax(-1), s.logits.values())] for s in seen]
    # Some steps above, some not; halfway between two values, so that rounding decides nothing.
    ordered = sorted(e for row in entropy for e in row)
    threshold = (ordered[len(seen)] + ordered[len(seen) + 1]) / 2
    expected = [i for i in steps if any(e > threshold for e in entropy[i])]
    assert fired(EntropyAbove(threshold), trace) == expected and 0 < len(expected) < len(seen)
    drawn = [[s.logits[seq].softmax(-1)[tok].item() for seq, tok in s.tokens.items()] for s in seen]
    ordered = sorted(p for row in drawn for p in row)
    low = (ordered[5] + ordered[6]) / 2
    expected = [i for i in steps if any(p < low for p in drawn[i])]
    assert fired(SampledProbBelow(low), trace) == expected and 0 < len(expected) < len(seen)


def test_breakpoints_watch_one_sequence_when_told(run):
    trace, seen = run.session.trace, run.checker.steps
    victim = next(s.preempted[0] for s in seen if s.preempted)
    assert fired(Preemption(victim), trace) == [i for i, s in enumerate(seen) if victim in s.preempted]
    assert fired(Preemption(seq_id=10_000), trace) == []
    hit = run.ids[1]
    assert fired(PrefixCacheHit(hit), trace) == [i for i, s in enumerate(seen) if hit in s.cached]


def test_text_matches_fires_once_when_the_text_first_matches(run):
    # Tiny models have no tokenizer: give a copy of the trace's tokens text to match against.
    trace = copy.deepcopy(run.session.trace)
    for step in trace.steps:
        for token in step.tokens:
            token.text_delta = f"<{token.token_id}>"
    target = trace.steps[6].tokens[1]
    pattern = rf"<{target.token_id}>"
    bp = TextMatches(pattern, seq_id=target.seq_id)
    steps = trace.sequences[target.seq_id].token_steps
    first = next(i for i in steps if trace.steps[i].token_of(target.seq_id).token_id == target.token_id)
    assert fired(bp, trace) == [first]
    assert "matches" in bp.check(trace, trace.steps[first])


def test_run_stops_at_the_first_breakpoint_and_says_which():
    run = record_tiny_run()
    session = run.session
    session.reset()
    assert session.trace.steps == [] and session.cursor.step is None
    assert not run.engine.has_unfinished() and run.engine.sequences == {}
    generator = torch.Generator().manual_seed(3)
    prefix = torch.randint(0, 256, (12,), generator=generator).tolist()
    params = SamplingParams(temperature=0, max_tokens=12)
    ids = [session.add(prefix + [i, i + 1], params) for i in range(4)]
    result = session.run(until=[AtStep(100), Preemption()], max_steps=500)
    assert isinstance(result.breakpoint, Preemption) and "preempted" in result.reason
    stopped = session.cursor.index
    assert session.trace.steps[stopped].schedule.preempted and not any(s.schedule.preempted for s in session.trace.steps[:stopped])
    # Time travel: the cursor moves over recorded steps; the engine does not run.
    steps_before = run.engine.step_count
    assert session.prev().index == stopped - 1
    assert session.seek(0).index == 0 and session.prev() is None
    assert session.next().index == 1
    assert session.seek(-1).index == stopped and session.next() is None
    with pytest.raises(IndexError):
        session.seek(stopped + 1)
    assert run.engine.step_count == steps_before
    # Stepping goes on from where the engine is, whatever the cursor shows.
    session.seek(0)
    assert session.step().index == stopped + 1 and session.cursor.index == stopped + 1
    result = session.run(max_steps=2)
    assert result.steps == 2 and result.breakpoint is None and not result.finished
    result = session.run(until=[SequenceFinished(ids[0])])
    assert result.reason == f"#{ids[0]} finished (length)"
    result = session.run()
    assert result.finished and session.step() is None
    assert session.trace.events[0].kind == "add" and session.trace.steps[0].engine_step > 0


@pytest.mark.parametrize("returned", ["yes", None, 1, ["a reason"], {"reason": "x"}, [Hit("ok"), "and a str"]])
def test_a_breakpoint_of_the_callers_whose_hits_are_no_list_of_hit_is_named(returned):
    """A Breakpoint subclass returning a str fired on any non-empty one, then failed deep in the
    run reading its reasons (AttributeError). Now the run names the breakpoint; the session goes on."""
    class Mine(Breakpoint):
        def hits(self, trace, step):
            return returned

    session, _ = preempting_session()
    with pytest.raises(ArgumentError, match=r"Mine.hits\(\) must return a list of Hit, got"):
        session.run(until=Mine())
    with pytest.raises(ArgumentError, match=r"Mine.hits\(\) must return a list of Hit"):
        Mine().check(session.trace, session.trace.steps[-1])
    assert session.cursor.index == len(session.trace.steps) - 1 == 0  # the step it ran, shown
    assert session.step().index == 1


# -- add_batch -------------------------------------------------------------------------------------


def test_a_batch_is_checked_whole_before_any_prompt_is_queued_and_each_is_tokenized_once(embedded_dir, monkeypatch):
    engine = LLMEngine.from_pretrained(embedded_dir, EngineConfig(device="cpu", num_kv_blocks=16, block_size=8))
    session = DebugSession(engine)
    encoded: list[str] = []
    encode = engine.tokenizer.encode

    def counting_encode(text, *args, **kwargs):
        encoded.append(text)
        return encode(text, *args, **kwargs)

    monkeypatch.setattr(engine.tokenizer, "encode", counting_encode)
    params = SamplingParams(temperature=0, max_tokens=4)
    # The second prompt is bad: nothing is queued, and the message names it.
    with pytest.raises(InvalidRequestError, match=r"^prompt 2: prompt token ids must be integers in \[0, "):
        session.add_batch(["What is 2 + 2?", [1, 10**9]], params)
    assert session.trace.sequences == {} and not engine.has_unfinished() and engine.sequences == {}
    with pytest.raises(InvalidRequestError, match=r"^prompt token ids must be"):  # one prompt: not numbered
        session.add([10**9], params)
    # Bad sampling parameters are refused whole too.
    with pytest.raises(InvalidRequestError, match=r"n \(samples per prompt\) must be an integer in \[1, 64\]"):
        session.add_batch(["What is 2 + 2?", "Hi"], SamplingParams(max_tokens=4, n=65))
    assert session.trace.sequences == {} and not engine.has_unfinished() and engine.sequences == {}
    # A good batch: queued in order, each prompt tokenized once, kept in the trace as typed.
    encoded.clear()
    prompts = ["What is the capital of France?", "Say hello in Spanish."]
    ids = session.add_batch(prompts, params, chat=True)
    assert len(encoded) == len(prompts) and all(p in text for p, text in zip(prompts, encoded))
    for seq_id, prompt in zip(ids, prompts):
        record = session.trace.sequences[seq_id]
        assert (record.prompt_text, record.chat) == (prompt, True)
        assert record.prompt_ids == engine.encode_prompt(prompt, chat=True) == engine.sequences[seq_id].token_ids.tolist()
    encoded.clear()
    assert session.run().finished and encoded == []  # running tokenizes nothing more


# -- run_iter --------------------------------------------------------------------------------------


def preempting_session() -> tuple[DebugSession, list[int]]:
    """The tiny model with four greedy requests sharing a 12-token prefix in a 14-block pool:
    they preempt each other. Returns the session and the sequence ids."""
    engine = LLMEngine.from_hf_model(make_hf_model("gqa-tied-llama3"),
                                     EngineConfig(device="cpu", dtype="float32", num_kv_blocks=14, block_size=4))
    session = DebugSession(engine)
    prefix = torch.randint(0, 256, (12,), generator=torch.Generator().manual_seed(3)).tolist()
    ids = session.add_batch([prefix + [i, i + 1] for i in range(4)], SamplingParams(temperature=0, max_tokens=12))
    return session, ids


def tokens(session: DebugSession) -> list[tuple[int, int, int]]:
    return [(s.index, t.seq_id, t.token_id) for s in session.trace.steps for t in s.tokens]


def test_run_iter_yields_each_step_and_returns_what_run_does():
    session, _ = preempting_session()
    steps = session.run_iter(until=[AtStep(100), Preemption()])
    yielded = []
    while True:
        try:
            yielded.append(next(steps))
        except StopIteration as end:
            result = end.value
            break
    stopped = session.cursor.index
    assert session.trace.steps[stopped].schedule.preempted and stopped == len(session.trace.steps) - 1
    assert yielded == list(range(stopped))  # every step but the one the breakpoint fired at
    twin, _ = preempting_session()
    assert result == twin.run(until=[AtStep(100), Preemption()]) and result.steps == stopped + 1
    assert tokens(session) == tokens(twin)


def test_a_run_iter_left_midway_leaves_the_cursor_on_its_last_step_and_a_later_run_goes_on():
    session, _ = preempting_session()
    steps = session.run_iter()
    assert [next(steps) for _ in range(3)] == [0, 1, 2]
    del steps  # the caller stops taking steps (Pause): the generator is closed
    assert session.cursor.index == 2 == len(session.trace.steps) - 1
    assert session.step().index == 3
    session.seek(0)
    steps = session.run_iter(max_steps=2)
    assert list(steps) == [4, 5] and session.cursor.index == 5
    result = session.run()
    assert result.finished and result.steps == len(session.trace.steps) - 6
    twin, _ = preempting_session()
    twin.run()
    assert tokens(session) == tokens(twin)  # stopping and going on changed nothing


def take(steps) -> RunResult | int:
    """next(steps): the index it yields, or the RunResult it returns."""
    try:
        return next(steps)
    except StopIteration as end:
        return end.value


@pytest.mark.parametrize("taken", [0, 2], ids=["not-started", "midway"])
@pytest.mark.parametrize("then", ["next", "close", "drop"])
def test_a_reset_ends_an_open_run_iter_without_touching_the_new_trace(taken, then, monkeypatch):
    """The old run's cleanup sought the last step of the new, empty trace (NoSuchStep, or
    "Exception ignored" when the dropped generator was collected), and its next() went on
    stepping the requests queued after the reset."""
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    session, _ = preempting_session()
    steps = session.run_iter()
    assert [next(steps) for _ in range(taken)] == list(range(taken))
    session.reset()
    session.add([5, 6, 7], SamplingParams(temperature=0, max_tokens=4))
    engine_steps = session.engine.step_count
    if then == "next":
        result = take(steps)
        assert result == RunResult(taken, None, f"the session was reset after {taken} step(s) of this run", False)
        assert take(steps) is None  # ended: a generator that returned yields no more
    elif then == "close":
        steps.close()
    else:
        del steps
        gc.collect()
    assert unraisable == []
    assert session.engine.step_count == engine_steps and session.trace.steps == [] and session.cursor.index == -1
    assert session.run().finished and len(session.trace.steps) == 4  # the new request runs as usual
