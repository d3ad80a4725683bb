"""diff_traces on deep lineages: a small file can hold a chain of thousands of forks (a sample
of a sample of a sample..., a beam search's beams over many steps), and a request's key and
label must cost the same at any depth. They were the tuple of every fork down to the request,
and its words: a chain of 2,000 forks (40 KB of trace) made 44 MB of `diff` output, and the
web UI's Compare with such a trace file built as much in the server's memory.
"""

from __future__ import annotations

import pytest
from wide_traces import fork_chain, python_calls

from inspector import diff_traces
from inspector.trace.diff import LABEL_FORKS
from inspector.trace.diff_text import format_diff
from inspector.views import compare_html

MAX_LABEL = 120  # characters: "request 0 / ... 1,999 fork(s) ... / sample 0 / sample 0"


def calls_to_diff(trace) -> int:
    return python_calls(lambda: diff_traces(trace, trace))


@pytest.mark.parametrize("cause", ["sample", "beam"])
def test_a_deep_chain_of_forks_costs_the_same_per_request_at_any_depth(cause):
    counts = [calls_to_diff(fork_chain(depth, cause)) for depth in (100, 200, 400, 800)]
    per_request = [(b - a) / n for a, b, n in zip(counts, counts[1:], (100, 200, 400))]
    assert max(per_request) <= 1.05 * min(per_request), f"a request's cost grows with the depth: {per_request}"


@pytest.mark.parametrize("cause", ["sample", "beam"])
def test_labels_and_every_output_of_a_deep_chain_stay_short(cause):
    trace = fork_chain(2000, cause)
    diff = diff_traces(trace, trace)
    assert diff.equal and len(diff.requests) == 2001 and len({r.key for r in diff.requests}) == 2001
    assert max(len(r.label) for r in diff.requests) <= MAX_LABEL
    deepest = diff.requests[-1].label
    assert deepest.startswith("request 0 / ... 1,998 fork(s) ... / ") and deepest.count(" / ") == 1 + LABEL_FORKS
    for text in (format_diff(diff, tokens=True), compare_html(diff, "a", "b")):
        assert len(text) <= 2001 * 4 * MAX_LABEL


def test_shallow_labels_name_every_fork():
    trace = fork_chain(LABEL_FORKS)
    labels = [r.label for r in diff_traces(trace, trace).requests]
    assert labels == ["request 0", "request 0 / sample 0", "request 0 / sample 0 / sample 0"]
