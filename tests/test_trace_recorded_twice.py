"""What a trace records twice must say the same, or the file is refused: else two views of one
file disagree (the text panel draws a sequence's token deltas, `show`, a diff and the text
breakpoint read its text; the timeline draws the steps that preempted it, `show` and a diff
print its num_preemptions; the KV grid marks a block x2 by its ref_count and lists its holders
from the block tables; the attention overlay maps a query to blocks by the table the step ran
with, the grid and the block tables panel by the step's KV snapshot).

Every position is tried: each sequence's text, each token's delta, each sequence's count, each
step's preempted list, each recorded block's ref_count and each scheduled sequence's block
table, on a real recording (a tiny random model, with preemptions and shared prefix blocks),
edited in memory and checked by the loader's own validate_trace; one edit of each kind goes
through a saved file and load().
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
REF_COUNT = "ref_count is not the number of block tables that hold it"
TABLES = "ran with block table .* but the step's KV snapshot gives it"
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


def test_a_ref_count_other_than_the_tables_holding_the_block_is_refused_at_every_block(trace):
    edits = 0
    for step in trace.steps:
        for i in range(step.kv.block_ids.numel()):
            for delta in (1, -1):
                counts = step.kv.ref_count.clone()
                counts[i] += delta
                if counts[i] >= 0:
                    edits += 1
                    with changed(step.kv, "ref_count", counts):
                        refused(trace, f"step {step.index}: block {int(step.kv.block_ids[i])}'s {REF_COUNT}")
    assert edits > 100


def test_a_scheduled_table_other_than_the_snapshots_is_refused_at_every_entry(trace):
    num_blocks, edits = trace.engine.num_blocks, 0
    for step in trace.steps:
        held = step.kv.block_tables()
        for x in step.schedule.scheduled:
            for i in range(len(held.get(x.seq_id, [])) and len(x.block_table)):
                table = list(x.block_table)
                table[i] = (table[i] + 1) % num_blocks
                edits += 1
                with changed(x, "block_table", table):
                    refused(trace, f"step {step.index}: sequence {x.seq_id} {TABLES}")
    assert edits > 20


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


def first_scheduled_held(edit):
    """An edit of the scheduled record of a sequence that holds two blocks or more at the step's end."""
    def edit_document(document):
        step = next(s for s in document["steps"] if any(len(x["block_table"]) > 1 for x in s["schedule"]["scheduled"]))
        edit(next(x for x in step["schedule"]["scheduled"] if len(x["block_table"]) > 1))
    return edit_document


@pytest.mark.parametrize(("edit", "message"), [
    (first_sequence(lambda seq: seq.update(text=seq["text"] + "<script>")), TEXT),
    (first_token(lambda token: token.update(text_delta="!")), TEXT),
    (first_sequence(lambda seq: seq.update(num_preemptions=seq["num_preemptions"] + 1)), PREEMPTIONS),
    (first_scheduled_held(lambda x: x["block_table"].reverse()), TABLES),
])
def test_a_file_that_says_two_things_is_refused_by_load(trace, tmp_path, edit, message):
    with pytest.raises(TraceError, match=message):
        load(edited_file(trace, tmp_path, edit))
