"""What a trace records twice must say the same, or the file is refused: else two views of one
file disagree (the text panel draws a sequence's token deltas, `show`, a diff and the text
breakpoint read its text; the timeline draws the steps that preempted it, `show` and a diff
print its num_preemptions).

Every position is tried: each sequence's text, each token's delta, each sequence's count and
each step's preempted list, on a real recording (a tiny random model, with preemptions), edited
in memory and checked by the loader's own validate_trace; one edit of each kind goes through a
saved file and load().
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_inspector_support import record_tiny_run

from inspector import TraceError, load, save
from inspector.trace.model import Trace
from inspector.trace.validate import validate_trace

TEXT = "its text is not the text deltas of its tokens, joined"
PREEMPTIONS = r"num_preemptions is \d+, but \d+ step\(s\) preempted it"


@pytest.fixture(scope="module")
def trace() -> Trace:
    trace = record_tiny_run().session.trace
    validate_trace(trace)  # the recording itself agrees with itself
    assert any(step.schedule.preempted for step in trace.steps), "the base run has no preemption"
    return trace


@contextmanager
def changed(obj: object, name: str, value: object) -> Iterator[None]:
    """obj.name = value inside the block, restored after (the trace is shared by the tests)."""
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def refused(trace: Trace, message: str) -> None:
    with pytest.raises(TraceError, match=message):
        validate_trace(trace)


@pytest.mark.parametrize("edit", [lambda t: t + "x", lambda t: t[:-1], lambda t: t[::-1] + "<b>", lambda t: ""])
def test_a_sequence_text_other_than_its_deltas_is_refused_for_every_sequence(trace, edit):
    for seq in trace.sequences.values():
        if edit(seq.text) != seq.text:
            with changed(seq, "text", edit(seq.text)):
                refused(trace, f"sequence {seq.seq_id}: {TEXT}")


def test_a_token_delta_other_than_the_text_is_refused_at_every_token(trace):
    tokens = [token for step in trace.steps for token in step.tokens]
    assert len(tokens) > 20
    for token in tokens:
        with changed(token, "text_delta", token.text_delta + "\u202e"):
            refused(trace, f"sequence {token.seq_id}: {TEXT}")


def test_num_preemptions_other_than_the_steps_that_preempted_is_refused_for_every_sequence(trace):
    for seq in trace.sequences.values():
        for wrong in {seq.num_preemptions + 1, max(seq.num_preemptions - 1, 0)} - {seq.num_preemptions}:
            with changed(seq, "num_preemptions", wrong):
                refused(trace, f"sequence {seq.seq_id}: {PREEMPTIONS}")


def test_a_step_preempting_one_more_sequence_is_refused_at_every_step(trace):
    for step in trace.steps:
        for seq_id in trace.sequences.keys() - set(step.schedule.preempted):
            with changed(step.schedule, "preempted", [*step.schedule.preempted, seq_id]):
                refused(trace, f"sequence {seq_id}: {PREEMPTIONS}")


def edited_file(trace: Trace, tmp_path: Path, edit) -> Path:
    path = tmp_path / "run.mltrace"
    save(trace, path)
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    document = json.loads(members["trace.json"])
    edit(document["trace"])
    members["trace.json"] = json.dumps(document).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def first_sequence(edit):
    return lambda document: edit(next(iter(document["sequences"].values())))


def first_token(edit):
    return lambda document: edit(next(step for step in document["steps"] if step["tokens"])["tokens"][0])


@pytest.mark.parametrize(("edit", "message"), [
    (first_sequence(lambda seq: seq.update(text=seq["text"] + "<script>")), TEXT),
    (first_token(lambda token: token.update(text_delta="!")), TEXT),
    (first_sequence(lambda seq: seq.update(num_preemptions=seq["num_preemptions"] + 1)), PREEMPTIONS),
])
def test_a_file_that_says_two_things_is_refused_by_load(trace, tmp_path, edit, message):
    with pytest.raises(TraceError, match=message):
        load(edited_file(trace, tmp_path, edit))
