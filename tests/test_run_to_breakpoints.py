"""DebugSession.run stops at exactly the steps where its breakpoints fire, and says every one.

A run is driven as a user drives it: Run to breakpoint, look, maybe travel back or fork, Run
again; until nothing is left. Every kind of breakpoint is armed, alone and all together, and
the stops are checked against two truths: each breakpoint's own check over the finished trace
(which fires where), and the engine's own state seen by an observer beside the recorder (the
Checker of test_inspector_support: preempted, prefix-cache hits, finished, per step). The
scenario makes every event happen, some in the very first step of the run and several in one
step: a tiny byte-level model in a 14-block pool of 4-token blocks, whose prefix cache still
holds a prompt's blocks from before a reset, four requests sharing that prefix (preemptions,
prefix-cache hits), one of them drawing two samples (a fork with a copy on write during a step)
and a user's fork made between two runs (a copy on write before a step).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from test_inspector_support import Checker
from tiny_model import write_tiny_model

from inspector import (
    AtStep,
    Breakpoint,
    CopyOnWrite,
    DebugSession,
    EntropyAbove,
    KVUsageAbove,
    Preemption,
    PrefixCacheHit,
    SampledProbBelow,
    SequenceFinished,
    TextMatches,
)
from minillama import EngineConfig, LLMEngine, SamplingParams

# Every kind the API and the web UI's form offer, with values that fire at some steps, not all.
KINDS: dict[str, Callable[[], Breakpoint]] = {
    "at-step": lambda: AtStep(6),
    "finished": SequenceFinished,
    "preemption": Preemption,
    "prefix-hit": PrefixCacheHit,
    "copy-on-write": CopyOnWrite,
    "text": lambda: TextMatches("[a-z]"),
    "entropy": lambda: EntropyAbove(5.4),
    "unlikely-token": lambda: SampledProbBelow(0.004),
    "kv-usage": lambda: KVUsageAbove(80),
}
FORK_PAUSE = 4  # the user pauses after this many steps and forks request 0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny"))


def drive(tiny, breakpoints: Callable[[], list[Breakpoint]]) -> tuple[DebugSession, Checker, list[tuple[int, list[str]]]]:
    """Run the scenario to the end, a run() per stop; returns the session, the engine's view of
    each step, and each stop: (the step the cursor stopped on, the reasons the run gave)."""
    engine = LLMEngine.from_pretrained(tiny, EngineConfig(device="cpu", num_kv_blocks=14, block_size=4))
    session = DebugSession(engine)
    prefix = torch.randint(0, 256, (12,), generator=torch.Generator().manual_seed(0)).tolist()
    session.add(prefix + [1], SamplingParams(temperature=0, max_tokens=2))
    session.run()
    session.reset()  # an empty trace; the engine's prefix cache still holds the prefix's 3 blocks
    checker = Checker(engine, set())
    engine.add_observer(checker)
    first = session.add(prefix + [5, 6, 7], SamplingParams(temperature=0, max_tokens=12))
    session.add_batch([prefix + [9, 9], prefix + [8, 8, 8, 8, 8]], SamplingParams(temperature=1.0, max_tokens=10, seed=1))
    session.add(prefix + [1, 2, 3], SamplingParams(temperature=0.8, max_tokens=8, n=2, seed=3))
    stops: list[tuple[int, list[str]]] = []
    forked = False
    while True:
        if not forked and len(session.trace.steps) == FORK_PAUSE:
            session.fork(first, len(prefix) + 3 + 2, [42])  # between two steps, as the page's "what if?"
            forked = True
        # Until the fork, a run is paused (max_steps) where the user forks; then it goes on.
        result = session.run(until=breakpoints(), max_steps=None if forked else FORK_PAUSE - len(session.trace.steps))
        if result.breakpoint is not None:
            assert result.fired[0] is result.breakpoint
            stops.append((session.cursor.index, result.reason.split("; ")))
            session.seek(0)  # travel back: the next run goes on from where the engine is, all the same
        elif result.finished:
            return session, checker, stops


def expected_stops(session: DebugSession, breakpoints: list[Breakpoint]) -> list[tuple[int, list[str]]]:
    """Where the finished trace says the run should stop, and with which reasons: every step at
    which any breakpoint fires, each one's reasons in the order the breakpoints were given."""
    trace = session.trace
    expected = []
    for step in trace.steps:
        reasons = [reason for bp in breakpoints for reason in (bp.check(trace, step) or "").split("; ") if reason]
        if reasons:
            expected.append((step.index, reasons))
    return expected


@pytest.mark.parametrize("kind", KINDS)
def test_a_run_stops_at_every_step_its_breakpoint_fires_and_nowhere_else(tiny, kind):
    session, checker, stops = drive(tiny, lambda: [KINDS[kind]()])
    assert stops == expected_stops(session, [KINDS[kind]()]) != []
    seen = checker.steps  # the engine's own truth, for the kinds it tells directly
    engine_steps = {
        "preemption": [i for i, s in enumerate(seen) if s.preempted],
        "prefix-hit": [i for i, s in enumerate(seen) if s.cached],
        "finished": [i for i, s in enumerate(seen) if s.finished],
    }
    if kind in engine_steps:
        assert [index for index, _ in stops] == engine_steps[kind]
    if kind == "prefix-hit":
        assert stops[0][0] == 0  # the very first step of the run (its prefix from before the reset)


def test_when_several_fire_in_one_step_the_run_names_every_one_and_misses_none(tiny):
    every = lambda: [make() for make in KINDS.values()]  # noqa: E731
    session, checker, stops = drive(tiny, every)
    assert stops == expected_stops(session, every())
    # Several fired in one step, an event among them that a breakpoint given before it hid.
    trace, armed = session.trace, every()
    firing = [[type(bp) for bp in armed if bp.check(trace, step)] for step in trace.steps]
    events = (SequenceFinished, Preemption, PrefixCacheHit, CopyOnWrite)
    assert any(len(kinds) > 1 and any(k in events for k in kinds[1:]) for kinds in firing)
    for index, seen in enumerate(checker.steps):  # every victim the engine preempted is named at its step
        assert all(any(f"#{victim} was preempted" in r for r in dict(stops)[index]) for victim in seen.preempted)
