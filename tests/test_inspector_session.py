"""Breakpoints fire where their condition holds and only there; DebugSession runs to them,
travels over the recorded steps, and resets."""

from __future__ import annotations

import copy

import pytest
import torch
from test_inspector_support import record_tiny_run

from inspector import (
    AtStep,
    EntropyAbove,
    KVUsageAbove,
    Preemption,
    PrefixCacheHit,
    SampledProbBelow,
    SequenceFinished,
    TextMatches,
)
from minillama import SamplingParams


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
