"""The .mltrace file: a lossless round trip, and every kind of bad file refused with a reason."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from test_inspector_support import record_tiny_run

from inspector import TraceError, export_chrome_trace, load, save
from inspector.trace.codec import encode
from inspector.trace.model import SCHEMA_VERSION


@pytest.fixture(scope="module")
def trace():
    return record_tiny_run().session.trace


@pytest.fixture(scope="module")
def saved(trace, tmp_path_factory):
    path = tmp_path_factory.mktemp("trace") / "run.mltrace"
    save(trace, path)
    return path


def test_save_writes_only_regular_files(trace, tmp_path):
    """save() replaces its target whole (atomically), so it refuses one that is not a regular
    file: the trace would take a device's or a pipe's place, or vanish into /dev/null."""
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    for target in (pipe, tmp_path, "/dev/null"):
        with pytest.raises(TraceError, match="is not a regular file"):
            save(trace, target)
    assert pipe.is_fifo() and not (tmp_path / "pipe.partial").exists()
    assert Path("/dev/null").is_char_device()


def flat(trace):
    tensors: dict[str, torch.Tensor] = {}
    return encode(trace, tensors, "trace"), tensors


def test_round_trip_is_lossless(trace, saved):
    loaded = load(saved)
    json_a, tensors_a = flat(trace)
    json_b, tensors_b = flat(loaded)
    assert json_a == json_b
    assert tensors_a.keys() == tensors_b.keys()
    for name, tensor in tensors_a.items():
        assert tensor.dtype == tensors_b[name].dtype and torch.equal(tensor, tensors_b[name]), name
    # Attention rows compute from the file alone, exactly as from the live trace.
    seq_id = next(iter(trace.attention))
    assert torch.equal(loaded.attention_row(seq_id, 1, 2, 20), trace.attention_row(seq_id, 1, 2, 20))


def rewrite(saved, tmp_path, members: dict[str, bytes | None]) -> object:
    """A copy of the saved trace with some members replaced (None: removed)."""
    with zipfile.ZipFile(saved) as zf:
        contents = {name: zf.read(name) for name in zf.namelist()}
    contents.update(members)
    path = tmp_path / "bad.mltrace"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in contents.items():
            if data is not None:
                zf.writestr(name, data)
    return path


def edited_json(saved, edit) -> bytes:
    with zipfile.ZipFile(saved) as zf:
        document = json.loads(zf.read("trace.json"))
    edit(document)
    return json.dumps(document).encode()


def test_not_a_zip_and_truncated_files_are_refused(saved, tmp_path):
    text = tmp_path / "notes.mltrace"
    text.write_text("just some text")
    with pytest.raises(TraceError, match="not a .mltrace file, or it is truncated or damaged"):
        load(text)
    data = saved.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 30):
        truncated = tmp_path / f"cut{cut}.mltrace"
        truncated.write_bytes(data[:cut])
        with pytest.raises(TraceError, match="not a .mltrace file, or it is truncated or damaged"):
            load(truncated)
    with pytest.raises(TraceError, match="does not exist"):
        load(tmp_path / "missing.mltrace")


def test_damaged_member_is_refused(saved, tmp_path):
    # Flip bytes inside the deflated trace.json: zip's CRC check catches it.
    data = bytearray(saved.read_bytes())
    start = data.index(b"trace.json") + len("trace.json") + 40
    data[start : start + 20] = bytes(20)
    damaged = tmp_path / "damaged.mltrace"
    damaged.write_bytes(bytes(data))
    with pytest.raises(TraceError, match="truncated or damaged"):
        load(damaged)


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"trace.json": None}, "has no trace.json"),
        ({"tensors.safetensors": None}, "has no tensors.safetensors"),
        ({"trace.json": b"{not json"}, "trace.json is not valid JSON"),
        ({"trace.json": b"[1, 2]"}, "not an mltrace document"),
        ({"tensors.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!"}, "tensors.safetensors is damaged"),
    ],
)
def test_missing_or_malformed_members_are_refused(saved, tmp_path, members, message):
    with pytest.raises(TraceError, match=message):
        load(rewrite(saved, tmp_path, members))


def set_key(path: list, value):
    def edit(document):
        node = document
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


def first_sequence_token_step(step: int):
    def edit(document):
        first = next(iter(document["trace"]["sequences"].values()))  # ids differ from run to run
        first["token_steps"][0] = step

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (set_key(["schema_version"], SCHEMA_VERSION + 1), f"schema version {SCHEMA_VERSION + 1}, newer than"),
        (set_key(["schema_version"], 1), "schema version 1, older than .* record the run again"),
        (set_key(["schema_version"], "1"), "bad schema_version"),
        (set_key(["trace", "steps"], "many"), r"trace.steps: expected a list, got str"),
        (set_key(["trace", "steps", 3, "index"], True), r"trace.steps.3.index: expected an integer, got bool"),
        (set_key(["trace", "model", "num_heads"], None), r"trace.model.num_heads: expected an integer"),
        (set_key(["trace", "steps", 0, "kv", "fill"], {"tensor": "nowhere"}), "'nowhere' is missing"),
        (set_key(["trace", "engine", "num_blocks"], 99), r"\(pool 14, .* do not fit the engine's pool of 99 blocks"),
        (set_key(["trace", "steps", 1, "kv", "num_cached_free"], 999), r"cached free 999\) do not fit"),
        (set_key(["trace", "model", "head_dim"], 8), "do not match the model"),
        (set_key(["trace", "sequences", "zero"], {}), "key 'zero' is not an integer"),
        (set_key(["trace", "steps", 0, "kv", "fill"], {"tensor": "trace.steps.0.kv.cached"}), "referenced a second time"),
        (first_sequence_token_step(999), "token_steps must increase, from its added_step on, within the trace's steps"),
        (set_key(["trace", "steps", 2, "schedule", "scheduled", 0, "block_table"], [0]), "lacks blocks"),
    ],
)
def test_wrong_version_types_and_shapes_are_refused(saved, tmp_path, edit, message):
    with pytest.raises(TraceError, match=message):
        load(rewrite(saved, tmp_path, {"trace.json": edited_json(saved, edit)}))


def first_sequence(edit):
    """An edit of the first sequence's record (ids differ from run to run)."""
    return lambda document: edit(next(iter(document["trace"]["sequences"].values())))


def first_token_of_last_sequence_finishes(document):
    seq = list(document["trace"]["sequences"].values())[-1]
    step = document["trace"]["steps"][seq["token_steps"][0]]
    next(t for t in step["tokens"] if t["seq_id"] == seq["seq_id"])["finish_reason"] = "stop"


def first_sampler_does_not_sample(document):
    step = next(s for s in document["trace"]["steps"] if s["tokens"])
    next(x for x in step["schedule"]["scheduled"] if x["samples"])["samples"] = False


def edit_events(edit):
    """An edit of the events list (the first is the first request's "add", before step 0)."""
    return lambda document: edit(document["trace"]["events"])


def event(kind: str, step: int, seq_id: int | None) -> dict:
    return {"step": step, "kind": kind, "message": kind, "seq_id": seq_id, "what": None, "fork": None}


def renumbered_sequence(document):
    sequences = document["trace"]["sequences"]
    key = next(iter(sequences))
    sequences["0" + key] = sequences.pop(key)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        # Enums (item 5: an unknown phase used to load, then crash the timeline with a KeyError).
        (set_key(["trace", "steps", 0, "schedule", "phase"], "chunked"),
         r"trace.steps.0.schedule.phase: expected one of 'prefill', 'decode', got 'chunked'"),
        (set_key(["trace", "events", 0, "kind"], "<b>"), r"trace.events.0.kind: expected one of 'add', 'abort', 'drop'"),
        (set_key(["trace", "model", "dtype"], "float64"), "trace.model.dtype: expected one of"),
        (set_key(["trace", "engine", "attention"], "magic"), "trace.engine.attention: expected one of"),
        # Ranges, declared in the schema.
        (set_key(["trace", "engine", "num_blocks"], 0), r"trace.engine.num_blocks: expected a number in \[1, 16,777,216\]"),
        (set_key(["trace", "engine", "block_size"], 2**40), "trace.engine.block_size: expected a number in"),
        (set_key(["trace", "model", "num_heads"], 10**6), "trace.model.num_heads: expected a number in"),
        (set_key(["trace", "steps", 1, "schedule", "scheduled", 0, "num_tokens"], 0), "num_tokens: expected a number >= 1"),
        (set_key(["trace", "steps", 1, "tokens", 0, "logits", "top_probs", 0], 1.5), r"top_probs.0: expected a number in \[0, 1.001\]"),
        (set_key(["trace", "steps", 1, "timings", "wall_ms"], -3.0), r"wall_ms: expected a number in \[0, 1e\+12\]"),
        (set_key(["trace", "steps", 1, "engine_step"], 2**64), "engine_step: expected a 64-bit integer"),
        (set_key(["trace", "steps", 1, "timings", "wall_ms"], 10**400), "wall_ms: expected a finite number"),
        # The sampling parameters: a schema of their own, and the engine's rules.
        (first_sequence(lambda seq: seq["params"].update(temperature=-1.0)), "params: temperature must be a finite number >= 0"),
        (first_sequence(lambda seq: seq["params"].update(top_p=0)), r"params: top_p must be in \(0, 1\]"),
        (first_sequence(lambda seq: seq["params"].update(stop_token_ids=[256])), "stop_token_ids: token id 256 is past"),
        (first_sequence(lambda seq: seq["params"].update(script="<b>")), "unexpected field 'script' in SamplingRecord"),
        (first_sequence(lambda seq: seq["params"].pop("seed")), "params: missing field 'seed'"),
        (first_sequence(lambda seq: seq["params"].update(n=0)), r"params: n \(samples per prompt\) must be"),
        (first_sequence(lambda seq: seq.update(extra=1)), "unexpected field 'extra' in SequenceRecord"),
        # Cross-field consistency.
        (first_sequence(lambda seq: seq["prompt_ids"].__setitem__(0, 256)), "prompt_ids: token id 256 is past the vocabulary"),
        (first_sequence(lambda seq: seq.update(traced=False)), "names a sequence that is not traced"),
        (first_token_of_last_sequence_finishes, "a token before its last says the sequence finished"),
        (first_sampler_does_not_sample, "does not sample; a sequence samples exactly when a step computes its last token"),
        (renumbered_sequence, "key '00' is not an integer"),
        (set_key(["trace", "events", 0, "step"], 10**6), "past the trace's"),
        (set_key(["trace", "events", 0, "seq_id"], None), "names no sequence of the trace"),
        (set_key(["trace", "events", 0, "what"], "logits"), "'add' before step 0: a drop event, and only one, says what"),
        (edit_events(lambda events: events.append({**event("drop", events[-1]["step"], None), "what": None})),
         "'drop' before step \\d+: a drop event, and only one, says what was dropped"),
        (edit_events(lambda events: events.append({**event("drop", events[-1]["step"], 0), "what": "logits"})),
         "a drop event names no sequence, not 0"),
        (set_key(["trace", "steps", 1, "schedule", "running"], [0, 0]), "running: sequence ids .* must be distinct"),
        (set_key(["trace", "steps", 1, "schedule", "scheduled", 0, "start"], 500), "but has \\d+ tokens by then"),
        # Events that say again what the sequences say (a replay acts on the events): once each.
        (edit_events(lambda events: events.insert(0, events[0])), "event 'add' before step 0: sequence \\d+ has one already"),
        (edit_events(lambda events: events.pop(0)), "each sequence has one 'add' event, at its added_step"),
        (edit_events(lambda events: events[0].update(step=1)), "each sequence has one 'add' event, at its added_step"),
        (edit_events(lambda events: events.append(event("prune", events[-1]["step"], events[0]["seq_id"]))),
         "each pruned sequence has one 'prune' event, at its pruned_step, and no other sequence has one"),
        (edit_events(lambda events: events.extend([event("abort", events[-1]["step"], events[0]["seq_id"])] * 2)),
         "event 'abort' before step \\d+: sequence \\d+ has one already"),
    ],
)
def test_enums_ranges_and_inconsistencies_are_refused(saved, tmp_path, edit, message):
    with pytest.raises(TraceError, match=message):
        load(rewrite(saved, tmp_path, {"trace.json": edited_json(saved, edit)}))


@pytest.mark.parametrize(("module", "limit", "message"), [
    ("inspector.trace.validate", "MAX_TIMELINE_CELLS", "timeline cells, over the limit of 10"),
    ("inspector.trace.validate", "MAX_TOKENS", "tokens, over the limit of 10"),
    ("inspector.trace.validate_arrays", "MAX_STORE_POSITIONS", "positions, over the limit of 10"),
    ("inspector.trace.validate_arrays", "MAX_SNAPSHOT_BLOCKS", "over the limit of 1$"),
])
def test_sizes_the_views_allocate_by_are_bounded(saved, monkeypatch, module, limit, message):
    """The views allocate by these sizes on every redraw (inspector/trace/bounds.py says how much)."""
    monkeypatch.setattr(f"{module}.{limit}", 1 if limit == "MAX_SNAPSHOT_BLOCKS" else 10)
    with pytest.raises(TraceError, match=message):
        load(saved)


def edited_tensors(saved, edit) -> bytes:
    with zipfile.ZipFile(saved) as zf:
        tensors = load_safetensors(zf.read("tensors.safetensors"))
    edit(tensors)
    return save_safetensors(tensors)


def set_tensor(name: str, make):
    """An edit replacing tensor `name` with make(tensor)."""

    def edit(tensors):
        tensors[name] = make(tensors[name])

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (set_tensor("trace.steps.1.kv.block_ids", lambda t: t.flip(0)), "block_ids must be increasing"),
        (set_tensor("trace.steps.1.kv.block_ids", lambda t: t + 14), r"block_ids must be increasing block ids in 0..13"),
        (set_tensor("trace.steps.1.kv.fill", lambda t: t[1:]), r"kv.fill has shape \(\d+,\), kv.block_ids"),
        (set_tensor("trace.steps.1.kv.table_blocks", lambda t: t[:-1]), "block tables are inconsistent"),
    ],
)
def test_inconsistent_kv_snapshots_are_refused(saved, tmp_path, edit, message):
    with pytest.raises(TraceError, match=message):
        load(rewrite(saved, tmp_path, {"tensors.safetensors": edited_tensors(saved, edit)}))


def test_a_table_block_missing_from_the_snapshot_is_refused(trace, saved, tmp_path):
    """Every block in a block table must be a recorded block, so that owners() and entry()
    never miss one."""
    index, kv = next((s.index, s.kv) for s in trace.steps if s.kv.table_blocks.numel())
    unrecorded = min(set(range(kv.num_blocks)) - set(kv.block_ids.tolist()))
    edit = set_tensor(f"trace.steps.{index}.kv.table_blocks", lambda t: torch.full_like(t, unrecorded))
    with pytest.raises(TraceError, match="name blocks the snapshot lacks"):
        load(rewrite(saved, tmp_path, {"tensors.safetensors": edited_tensors(saved, edit)}))


def test_a_trace_written_before_n_opens_as_before(trace, saved, tmp_path):
    """SamplingParams.n came after the first schema: a record without it is n = 1."""
    def drop_n(document):
        for seq in document["trace"]["sequences"].values():
            assert seq["params"].pop("n") == 1

    loaded = load(rewrite(saved, tmp_path, {"trace.json": edited_json(saved, drop_n)}))
    assert all("n" not in seq.params for seq in loaded.sequences.values())
    assert [seq.prompt_ids for seq in loaded.sequences.values()] == [seq.prompt_ids for seq in trace.sequences.values()]


def test_missing_field_is_refused(saved, tmp_path):
    def edit(document):
        del document["trace"]["steps"][0]["kv"]

    with pytest.raises(TraceError, match=r"trace.steps.0: missing field 'kv'"):
        load(rewrite(saved, tmp_path, {"trace.json": edited_json(saved, edit)}))


def test_oversized_files_are_refused_before_unpacking(saved, tmp_path):
    with pytest.raises(TraceError, match="over the limit"):
        load(saved, max_bytes=1000)
    # A zip bomb: 64 MiB of zeros deflate to about 64 kB; its declared size gives it away.
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("trace.json", b"0" * 2**26)
        zf.writestr("tensors.safetensors", b"")
    path = tmp_path / "bomb.mltrace"
    path.write_bytes(bomb.getvalue())
    assert path.stat().st_size < 2**20
    with pytest.raises(TraceError, match="is too large: it would unpack to 67,108,864 bytes, over the limit of "
                                         "33,554,432 bytes$"):
        load(path, max_bytes=2**25)


def test_chrome_trace_export(trace, tmp_path):
    path = tmp_path / "timings.json"
    export_chrome_trace(trace, path)
    document = json.loads(path.read_text())
    slices = [e for e in document["traceEvents"] if e["ph"] == "X"]
    steps = [e for e in slices if e["name"].startswith("step ")]
    assert len(steps) == len(trace.steps)
    assert {e["name"] for e in slices} >= {"schedule", "prepare", "forward", "sample"}
    for step, event in zip(trace.steps, steps):
        assert event["ts"] == pytest.approx(step.timings.start_ms * 1e3)
        assert event["dur"] == pytest.approx(step.timings.wall_ms * 1e3)
    assert sum(e["ph"] == "C" for e in document["traceEvents"]) == 2 * len(trace.steps)


def test_the_params_schema_mirrors_sampling_params():
    """SequenceRecord.params is a SamplingParams as a dict; its schema must name the same
    fields, or a fresh recording would be refused for an unexpected field."""
    import dataclasses
    import typing

    from inspector.trace.model import SamplingRecord
    from minillama import SamplingParams

    assert set(typing.get_type_hints(SamplingRecord)) == {f.name for f in dataclasses.fields(SamplingParams)}


def test_a_write_cut_short_leaves_the_old_file_and_nothing_beside_it(trace, tmp_path, monkeypatch):
    """save() and export_chrome_trace() write beside the target and rename (inspector/trace/
    replacing.py): a full disk part way leaves the file that was there, and no partial file."""
    import inspector.trace.tracefile as tracefile

    target, user_file = tmp_path / "run.mltrace", tmp_path / "run.mltrace.partial"
    save(trace, target)
    before = target.read_bytes()
    user_file.write_text("mine")  # a file of the user's that an earlier save overwrote, then deleted

    writestr = zipfile.ZipFile.writestr

    def disk_full(self, name, data, *args, **kwargs):  # trace.json written, then the disk is full
        if name == tracefile.TENSORS_MEMBER:
            raise OSError(28, "No space left on device")
        return writestr(self, name, data, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", disk_full)
    with pytest.raises(TraceError, match=r"run.mltrace: could not be written \(No space left on device\)"):
        save(trace, target)
    assert target.read_bytes() == before and user_file.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.mltrace", "run.mltrace.partial"]


def test_a_save_through_a_link_replaces_the_file_it_names_and_keeps_its_permissions(trace, tmp_path):
    """The link stays a link and the file it names gets the new trace; a private (0600) file
    stays private; what is not a regular file (a folder, a device) is refused, left as it was."""
    target, link = tmp_path / "kept" / "run.mltrace", tmp_path / "run.mltrace"
    target.parent.mkdir()
    target.write_bytes(b"old")
    target.chmod(0o600)
    link.symlink_to(target)
    save(trace, link)
    assert link.is_symlink() and len(load(target).steps) == len(trace.steps) and target.stat().st_mode & 0o777 == 0o600
    dangling = tmp_path / "dangling.mltrace"
    dangling.symlink_to(tmp_path / "kept" / "new.mltrace")  # a link to a file not there yet: made, as `>` does
    export_chrome_trace(trace, dangling)
    assert dangling.is_symlink() and json.loads((tmp_path / "kept" / "new.mltrace").read_text())["traceEvents"]
    for not_a_file in (tmp_path / "kept", Path(os.devnull)):
        with pytest.raises(TraceError, match="not a regular file"):
            save(trace, not_a_file)
    assert Path(os.devnull).is_char_device() and sorted(p.name for p in target.parent.iterdir()) == [
        "new.mltrace", "run.mltrace"]


def test_export_chrome_replaces_its_file_whole(trace, tmp_path):
    target = tmp_path / "t.json"
    target.write_text("old")
    export_chrome_trace(trace, target)
    assert json.loads(target.read_text())["traceEvents"] and [p.name for p in tmp_path.iterdir()] == ["t.json"]


def test_a_path_ending_in_a_slash_names_a_folder_even_before_it_exists(trace, tmp_path):
    with pytest.raises(TraceError, match="names a folder"):
        save(trace, f"{tmp_path}/new/")
    with pytest.raises(TraceError, match="names a folder"):
        export_chrome_trace(trace, f"{tmp_path}/new/")
    assert list(tmp_path.iterdir()) == []
