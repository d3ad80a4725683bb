"""Whatever save() writes, load() opens again: save() checks the file it is about to write by
the code load() checks a file with, and refuses, before writing anything, a trace load() would
refuse (TraceTooLarge for a limit, naming it and what shrinks a recording; TraceError naming a
field out of its range). Its callers pass the refusal on: `python -m inspector record` in one
line, the web UI's Save trace and Share link as a message, the session untouched.

The limits are checked at their edge: a trace saved with a limit set to exactly its own size
saves and loads again equal, and with the limit one below, save() refuses it (the file already
at the path left as it was) and load() refuses the file written at the edge, with the same
message. Then the real limits, with wide traces built in memory (tests/wide_traces.py)."""

from __future__ import annotations

import copy
import os
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as load_safetensors
from test_inspector_support import add_forks, record_tiny_run
from tiny_model import write_tiny_model
from wide_traces import wide_trace

import inspector.__main__
from inspector import CapturePolicy, DebugSession, Trace, TraceError, load, save
from inspector.trace import tracefile
from inspector.trace.bounds import MAX_LINE_TEXT, MAX_MILLIS, MAX_TOKEN_TEXT, ROUNDING
from inspector.trace.codec import encode
from inspector.trace.json_limits import scan
from inspector.trace.model import TraceTooLarge
from inspector.trace.tensor_member import MAX_TENSORS

SMALLER = "; not saved: load\\(\\) refuses a file over a limit.*record fewer steps or requests"
USERS_FILE = b"the user's own file, which a refused save leaves as it was"


@pytest.fixture(scope="module")
def trace() -> Trace:
    """A recorded run with every kind of record: preemption, prefix-cache hits, chunked
    prefills, attention stores of two requests, logits summaries and the logit lens."""
    policy = CapturePolicy(attention_requests=(0, 2), logit_lens=True)
    return record_tiny_run(policy, max_num_batched_tokens=8).session.trace


@pytest.fixture(scope="module")
def saved(trace, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("saved") / "run.mltrace"
    save(trace, path)
    return path


def member(path: Path, name: str) -> bytes:
    with zipfile.ZipFile(path) as zf:
        return zf.read(name)


def assert_equal(a: Trace, b: Trace) -> None:
    """Every field and every tensor (dtype and values) of two traces alike."""
    tensors_a: dict[str, torch.Tensor] = {}
    tensors_b: dict[str, torch.Tensor] = {}
    assert encode(a, tensors_a, "trace") == encode(b, tensors_b, "trace")
    assert tensors_a.keys() == tensors_b.keys()
    for name, tensor in tensors_a.items():
        assert tensor.dtype == tensors_b[name].dtype and torch.equal(tensor, tensors_b[name]), name


def _longest_store(trace: Trace, saved: Path) -> int:
    return max(store.length for store in trace.attention.values())


def _snapshot_blocks(trace: Trace, saved: Path) -> int:
    return max(max(s.kv.block_ids.numel(), s.kv.table_blocks.numel()) for s in trace.steps)


# (the module holding the limit, its name, the trace's own size by it, load()'s message past it)
LIMITS = [
    ("inspector.trace.tracefile", "MAX_JSON_ELEMENTS", lambda t, p: scan(member(p, "trace.json"))[1],
     "trace.json holds [\\d,]+ elements, over the limit of"),
    ("inspector.trace.tracefile", "MAX_JSON_DEPTH", lambda t, p: scan(member(p, "trace.json"))[0],
     "trace.json nests [\\d,]+ levels deep, over the limit of"),
    ("inspector.trace.tracefile", "MAX_JSON_BYTES", lambda t, p: len(member(p, "trace.json")),
     "its trace.json would unpack to [\\d,]+ bytes, over the limit of"),
    ("inspector.trace.tracefile", "DEFAULT_MAX_BYTES",
     lambda t, p: sum(info.file_size for info in zipfile.ZipFile(p).infolist()),
     "is too large: it would unpack to [\\d,]+ bytes, over the limit of"),
    ("inspector.trace.tensor_member", "MAX_TENSORS",
     lambda t, p: len(load_safetensors(member(p, "tensors.safetensors"))),
     "tensors.safetensors holds [\\d,]+ tensors, over the limit of"),
    ("inspector.trace.validate", "MAX_TIMELINE_CELLS", lambda t, p: len(t.sequences) * len(t.steps),
     "timeline cells, over the limit of"),
    ("inspector.trace.validate", "MAX_TOKENS",
     lambda t, p: sum(len(s.prompt_ids) + len(s.output_ids) for s in t.sequences.values()),
     "tokens, over the limit of"),
    ("inspector.trace.validate_arrays", "MAX_SNAPSHOT_BLOCKS", _snapshot_blocks, "block-table entries, over the limit of"),
    ("inspector.trace.validate_arrays", "MAX_STORE_POSITIONS", _longest_store, "positions, over the limit of"),
]


@pytest.mark.parametrize(("module", "limit", "size_of", "message"), LIMITS, ids=[limit[1] for limit in LIMITS])
def test_save_writes_a_trace_at_a_limit_and_refuses_one_past_it(trace, saved, tmp_path, monkeypatch, module, limit,
                                                                size_of, message):
    size = size_of(trace, saved)
    assert size > 1  # the recording has some of everything
    monkeypatch.setattr(f"{module}.{limit}", size)  # the trace is exactly at the limit
    at_limit = tmp_path / "at.mltrace"
    save(trace, at_limit)
    # load()'s own default is bound when it is defined: pass the one in force (the same, but patched)
    assert_equal(load(at_limit, max_bytes=tracefile.DEFAULT_MAX_BYTES), trace)

    monkeypatch.setattr(f"{module}.{limit}", size - 1)  # one past it
    target = tmp_path / "run.mltrace"
    target.write_bytes(USERS_FILE)
    with pytest.raises(TraceTooLarge, match=f"{message} {size - 1:,}[^;]*{SMALLER}"):
        save(trace, target)
    assert target.read_bytes() == USERS_FILE and sorted(os.listdir(tmp_path)) == ["at.mltrace", "run.mltrace"]
    with pytest.raises(TraceTooLarge, match=f"{message} {size - 1:,}"):  # the reader draws the line there too
        load(at_limit, max_bytes=tracefile.DEFAULT_MAX_BYTES)


def test_the_audits_long_run_is_refused_by_save_not_lost_by_load(tmp_path):
    """41,000 one-token requests: just past the real element limit (the audit's 20,000 requests
    of a real recording, each waiting in the steps before its own, made 8.6 million). save()
    wrote it without a word and load() refused it."""
    with pytest.raises(TraceTooLarge, match=f"holds 4,2[\\d,]+ elements, over the limit of 4,194,304{SMALLER}"):
        save(wide_trace(41_000, 20), tmp_path / "long.mltrace")
    assert os.listdir(tmp_path) == []


def test_the_real_tensor_limit_is_drawn_where_load_draws_it(tmp_path):
    """Each step's KV snapshot is 8 tensors: 8,192 steps are the most a file holds, and save()
    refuses the 8,193rd (a trace at a limit saves and loads: the table above)."""
    steps, path = MAX_TENSORS // 8 + 1, tmp_path / "steps.mltrace"
    with pytest.raises(TraceTooLarge, match=f"holds {8 * steps:,} tensors, over the limit of {MAX_TENSORS:,}{SMALLER}"):
        save(wide_trace(1, steps), path)
    assert not path.exists()


def _first_logits(trace: Trace):
    return next(t.logits for s in trace.steps for t in s.tokens if t.logits is not None)


# (what is set, where it is, its value at its bound, and past it): each field's bound from bounds.py
FIELDS = [
    ("trace.model.name", lambda t, v: setattr(t.model, "name", v), "n" * MAX_LINE_TEXT, "n" * (MAX_LINE_TEXT + 1)),
    ("trace.events.0.message", lambda t, v: setattr(t.events[0], "message", v), "m" * MAX_LINE_TEXT,
     "m" * (MAX_LINE_TEXT + 1)),
    ("trace.sequences.0.prompt_tokens.0", lambda t, v: t.sequences[0].prompt_tokens.__setitem__(0, v),
     "p" * MAX_TOKEN_TEXT, "p" * (MAX_TOKEN_TEXT + 1)),
    ("trace.steps.0.timings.wall_ms", lambda t, v: setattr(t.steps[0].timings, "wall_ms", v), MAX_MILLIS,
     MAX_MILLIS * 1.5),
    ("trace.steps.0.timings.start_ms", lambda t, v: setattr(t.steps[0].timings, "start_ms", v), -MAX_MILLIS,
     -MAX_MILLIS * 1.5),
    ("logits.entropy", lambda t, v: setattr(_first_logits(t), "entropy", v), -ROUNDING, -2 * ROUNDING),
    ("logits.sampled_prob", lambda t, v: setattr(_first_logits(t), "sampled_prob", v), 1 + ROUNDING,
     1 + 2 * ROUNDING),
]


@pytest.mark.parametrize(("field", "edit", "at_bound", "past_it"), FIELDS, ids=[f[0] for f in FIELDS])
def test_a_field_out_of_its_range_is_refused_by_save_naming_it(trace, tmp_path, field, edit, at_bound, past_it):
    odd = copy.deepcopy(trace)
    edit(odd, at_bound)
    save(odd, tmp_path / "at.mltrace")
    assert_equal(load(tmp_path / "at.mltrace"), odd)
    edit(odd, past_it)
    target = tmp_path / "run.mltrace"
    target.write_bytes(USERS_FILE)
    with pytest.raises(TraceError, match=f"{field.replace('.', '[.]')}: expected .*; not saved$") as refused:
        save(odd, target)
    assert not isinstance(refused.value, TraceTooLarge) and target.read_bytes() == USERS_FILE


@pytest.mark.parametrize("command", ["record", "replay"])
def test_the_command_line_says_which_limit_in_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch, command):
    """`python -m inspector record -o` and `replay -o`: exit status 2, one line on stderr, no
    file (nor one left half written beside it)."""
    model_dir, out = write_tiny_model(tmp_path / "model"), tmp_path / "out"
    out.mkdir()
    recorded = tmp_path / "recorded.mltrace"
    record = ["record", "--model", str(model_dir), "--prompt", "hello", "--prompt", "bye", "--max-tokens", "3"]
    assert inspector.__main__.main([*record, "-o", str(recorded)]) == 0
    capsys.readouterr()
    # Just the recording's elements: it loads (a replay reads it), and a run of more steps is over.
    limit = scan(member(recorded, "trace.json"))[1]
    monkeypatch.setattr(tracefile, "MAX_JSON_ELEMENTS", limit - 1 if command == "record" else limit)
    args = record if command == "record" else ["replay", str(recorded), "--model", str(model_dir), "--alone"]
    status = inspector.__main__.main([*args, "-o", str(out / "run.mltrace")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "elements, over the limit of" in err and "; not saved" in err and "record fewer steps" in err
    assert os.listdir(out) == []


def _with_forks(beams: bool) -> Trace:
    run = record_tiny_run()
    add_forks(run, beams=beams)
    return run.session.trace


# The recordings of the inspector's tests, each with what it exercises.
RECORDINGS = {
    "preemption, prefix-cache hits, attention of two requests": lambda: record_tiny_run().session.trace,
    "chunked prefills, every request's attention, the logit lens, top-20 logits": lambda: record_tiny_run(
        CapturePolicy(attention_requests=(0, 1, 2, 3), logit_lens=True, top_k=20), max_num_batched_tokens=8
    ).session.trace,
    "no attention, top-1 logits": lambda: record_tiny_run(CapturePolicy(attention=False, top_k=1)).session.trace,
    "a user's fork (copy on write) and n = 2 samples": lambda: _with_forks(beams=False),
    "forks, samples and a beam search that prunes": lambda: _with_forks(beams=True),
}


@pytest.mark.parametrize("record", RECORDINGS.values(), ids=list(RECORDINGS))
def test_every_recording_round_trips_through_save_and_load_equal(tmp_path, record):
    trace = record()
    save(trace, tmp_path / "run.mltrace")
    assert_equal(load(tmp_path / "run.mltrace"), trace)


def test_a_fork_forcing_thousands_of_tokens_records_a_message_a_file_holds(tmp_path):
    """A fork's event message quotes its forced text: 1,100 tokens of "\\x00" (4,400 characters
    as repr escapes them; the web UI's Fork with text takes 4,000) made a message over
    MAX_LINE_TEXT, and the run could not be saved. The message quotes the text clipped; the
    fork record keeps every forced token's text."""
    from minillama import EngineConfig, LLMEngine, SamplingParams

    model_dir = write_tiny_model(tmp_path / "model", max_position_embeddings=2048)
    engine = LLMEngine.from_pretrained(model_dir, EngineConfig(device="cpu", num_kv_blocks=80, block_size=32))
    session = DebugSession(engine, CapturePolicy(attention=False))
    parent = session.add("hi", SamplingParams(temperature=0, max_tokens=2))
    session.step()
    forced = engine.tokenizer.encode("\x00" * 1100)
    session.fork(parent, engine.request(parent).num_prompt_tokens, forced, SamplingParams(temperature=0, max_tokens=1))
    assert session.run().finished
    (fork,) = [e for e in session.trace.events if e.kind == "fork"]
    assert len(fork.message) < 1000 and "".join(fork.fork.forced_texts) == "\x00" * 1100
    save(session.trace, tmp_path / "fork.mltrace")
    assert_equal(load(tmp_path / "fork.mltrace"), session.trace)
