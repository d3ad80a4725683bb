"""What loading a trace costs, counted in Python calls (sys.setprofile), not timed: a file may
be as wide as the limits let it (inspector/trace/bounds.py, tracefile.py's element limit), and
every one of its elements costs the checks' calls, so the cost of a sequence and of a step must
be small and the same however many there are (linear, no pass over the trace per element).

Measured on wide traces built in memory (wide_traces.py): one-token requests, many to a step,
the shape that packs the most records into the fewest bytes. Before these budgets a sequence
cost 294 calls (its sampling parameters checked twice, a call for every None and every bound)
and a file of 40,000 such requests, under 1 MB, took 2.5-7 s on 2 shared cores.
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from wide_traces import python_calls, wide_trace

from inspector import load, save
from inspector.__main__ import main
from minillama import SamplingParams
from minillama.cli.gc_heap import YOUNG_GENERATION_THRESHOLD

# Python calls (C functions included) per element, measured, with a little room: a change that
# adds a pass over the trace or a call per field fails here, and says by how much.
PER_SEQUENCE = 175  # a request with its "add" event, its scheduled record and its token (texts' lengths checked)
PER_LOGITS = 65  # a token's top-k summary
PER_STEP = 420  # a step with its KV snapshot (8 tensors), timings and empty queues


DEFAULT_THRESHOLDS = (700, 10, 10)  # CPython's


def calls_to_load(trace, path: Path) -> int:
    save(trace, path)
    return python_calls(lambda: load(path))


@pytest.mark.parametrize(("what", "make", "budget"), [
    ("sequence", lambda n: wide_trace(n, 4), PER_SEQUENCE),
    ("sequence with logits", lambda n: wide_trace(n, 4, logits=True), PER_SEQUENCE + PER_LOGITS),
    ("step", lambda n: wide_trace(1, n // 2), PER_STEP // 2),
])
def test_each_element_costs_a_small_fixed_number_of_calls(tmp_path, what, make, budget):
    """The calls added by 200, 400 and 800 more elements: each within the budget, and the same
    per element at every size (a pass per element would double the second difference)."""
    calls_to_load(make(8), tmp_path / "first.mltrace")  # the first load builds the codec's decoders
    counts = [calls_to_load(make(n), tmp_path / f"{n}.mltrace") for n in (200, 400, 800, 1600)]
    per_element = [(b - a) / n for a, b, n in zip(counts, counts[1:], (200, 400, 800))]
    assert max(per_element) <= budget, f"a {what} costs {per_element} calls, over the budget of {budget}"
    assert max(per_element) <= 1.05 * min(per_element), f"a {what}'s cost grows with the trace: {per_element}"


def test_sampling_parameters_are_checked_once_for_each_distinct_set(tmp_path, monkeypatch):
    """A run's requests mostly share their parameters: checking each set once made a file of
    40,000 requests a third cheaper. Distinct sets are each checked."""
    checked = []
    original = SamplingParams.validate
    monkeypatch.setattr(SamplingParams, "validate", lambda self: checked.append(self) or original(self))
    trace = wide_trace(300, 3)
    save(trace, tmp_path / "same.mltrace")  # which checks the trace too
    checked.clear()
    load(tmp_path / "same.mltrace")
    assert len(checked) == 1
    for seq in trace.sequences.values():
        seq.params["seed"] = seq.seq_id % 7
    save(trace, tmp_path / "seven.mltrace")
    checked.clear()
    load(tmp_path / "seven.mltrace")
    assert len(checked) == 7


def test_the_command_line_tunes_its_collector_before_it_reads_a_trace(tmp_path):
    """`python -m inspector show` on a wide file: with the default collector a third of the load
    went to collections of objects that all live on (the widest file: 2.2 s, 1.6 s tuned); the
    command tunes it as the server does (minillama/cli/gc_heap.py). Counted: the collections
    during a load by the library (the host's collector, untouched) and by the command."""
    path = tmp_path / "wide.mltrace"
    save(wide_trace(2000, 4), path)
    gc.set_threshold(*DEFAULT_THRESHOLDS)  # conftest.py restores the collector after the test
    collections = []

    def count(phase, info):
        collections.append(phase == "start")

    gc.callbacks.append(count)
    try:
        load(path)
        by_library, collections[:] = sum(collections), []
        assert gc.get_threshold() == DEFAULT_THRESHOLDS
        assert main(["show", str(path)]) == 0
        by_command = sum(collections)
        assert gc.get_threshold()[0] == YOUNG_GENERATION_THRESHOLD
    finally:
        gc.callbacks.remove(count)
    assert by_command * 5 < by_library, (by_command, by_library)
