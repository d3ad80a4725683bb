"""TextMatches fires once per sequence, at the step of the token that first made its text match,
whatever the pattern: one anchored at the end ("a$") stops matching as the text grows and
matches again later, and used to fire again each time. Checked against the first matching
prefix of each sequence's text found by brute force, over a table of patterns, for every
sequence, with the steps checked in order (as a run does) and in reverse (a loaded trace may be
searched any way)."""

from __future__ import annotations

import copy

import pytest
from test_inspector_support import record_tiny_run

from inspector import TextMatches, Trace

PATTERNS = ["a$", "ba", "b$", "(ab){3}", "x*", "^b", "a(b|$)", "bab$"]


@pytest.fixture(scope="module")
def trace() -> Trace:
    """A tiny run (preemptions, prefix hits) whose every sequence's i-th token reads "ab"[i % 2]:
    texts "a", "ab", "aba", ... (the tiny model has no tokenizer)."""
    trace = copy.deepcopy(record_tiny_run().session.trace)
    for seq in trace.sequences.values():
        for i, index in enumerate(seq.token_steps):
            trace.steps[index].token_of(seq.seq_id).text_delta = "ab"[i % 2]
    return trace


def first_matching_step(trace: Trace, pattern: TextMatches, seq_id: int) -> int | None:
    return next((index for index in trace.sequences[seq_id].token_steps
                 if pattern.regex.search(trace.text_until(seq_id, index))), None)


@pytest.mark.parametrize("order", ["forward", "reverse"])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_it_fires_at_the_first_match_only(trace, pattern, order):
    steps = trace.steps if order == "forward" else trace.steps[::-1]
    for seq_id in trace.sequences:
        bp = TextMatches(pattern, seq_id=seq_id)
        fired = sorted(step.index for step in steps if bp.hits(trace, step))
        first = first_matching_step(trace, bp, seq_id)
        assert fired == ([] if first is None else [first]), (pattern, seq_id)
    watching_all = TextMatches(pattern)  # every sequence, each once at its own first match
    fired = sorted((step.index, hit.seq_id) for step in steps for hit in watching_all.hits(trace, step))
    firsts = ((first_matching_step(trace, watching_all, seq_id), seq_id) for seq_id in trace.sequences)
    assert fired == sorted((index, seq_id) for index, seq_id in firsts if index is not None)


def test_an_end_anchored_pattern_matched_more_than_once_in_the_text(trace):
    """The table's reason: "a$" matches the text after tokens 0, 2, 4, ... of every sequence."""
    seq = next(iter(trace.sequences.values()))
    bp = TextMatches("a$")
    matching = [i for i in seq.token_steps if bp.regex.search(trace.text_until(seq.seq_id, i))]
    fired = [step.index for step in trace.steps if any(hit.seq_id == seq.seq_id for hit in bp.hits(trace, step))]
    assert len(matching) > 1 and fired == matching[:1]


def test_a_match_of_the_whole_text_is_quoted_short(trace):
    """".*" matches each sequence's whole text: the hit's message quoted all of it, one line of
    as many characters as the sequence has tokens, in the status line."""
    trace = copy.deepcopy(trace)  # the module's trace stays as the other tests read it
    longest = max(trace.sequences.values(), key=lambda seq: len(seq.token_steps))
    for index in longest.token_steps:
        trace.steps[index].token_of(longest.seq_id).text_delta = "ab" * 200
    hits = [hit for step in trace.steps for hit in TextMatches(".+", seq_id=longest.seq_id).hits(trace, step)]
    assert len(hits) == 1 and len(hits[0].reason) < 160 and "'.+'" in hits[0].reason
