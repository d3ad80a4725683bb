"""Hostile .mltrace files that try to make load() spend memory or time, or crash it: each is
refused quickly, with a TraceError that names the problem, and bounded memory.

- a zip bomb in trace.json (issue 11, item 4), and one within the byte limit that holds tens
  of millions of JSON elements;
- a member that understates its unpacked size (item 8): unpacked in 1 MiB chunks, stopped at
  the first byte past its declared size;
- 200,000 nested brackets (item 13): a TraceError, never RecursionError, in load() and the CLI;
- a path that is a directory, unreadable, or not a regular file;
- a zip directory listing thousands of members, a bzip2 member (inflated with no bound), a
  safetensors header listing more tensors than a trace can reference, or tensors of a dtype
  no trace holds, or tensors the trace does not reference.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import tracemalloc
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from test_inspector_support import record_tiny_run

import inspector.__main__
from inspector import TraceError, load, save
from inspector.trace import tensor_member
from inspector.trace.tracefile import MAX_JSON_BYTES, MAX_JSON_ELEMENTS
from inspector.views.attention_map import attention_matrix


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("limits") / "run.mltrace"
    save(record_tiny_run().session.trace, path)
    return path


def members(saved: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(saved) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def write_zip(path: Path, contents: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in contents.items():
            zf.writestr(name, data)
    return path


def refused(path: Path, match: str, **kwargs) -> int:
    """Load `path` expecting a TraceError matching `match`. -> the peak bytes Python allocated
    meanwhile: what a refusal may cost is bounded by memory (and by what is never parsed), not
    by a clock."""
    tracemalloc.start()
    try:
        with pytest.raises(TraceError, match=match):
            load(path, **kwargs)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def streamed_zip(path: Path, json_chunks, tensors: bytes = save_safetensors({})) -> Path:
    """A zip whose trace.json is written chunk by chunk (a large one never sits in memory)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("trace.json", "w", force_zip64=True) as member:
            for chunk in json_chunks:
                member.write(chunk)
        zf.writestr("tensors.safetensors", tensors)
    return path


# -- trace.json: size, elements, depth ---------------------------------------------------------


def test_a_zip_bomb_in_trace_json_is_refused_from_its_declared_size(tmp_path):
    """Item 4: 400 MB of "[0,0,...]" in a file of about 400 KB. It used to take 15 s and 2.3 GB:
    the whole file's limit (4 GiB) let it through, then json.loads built it."""
    size = 400 * 2**20
    chunk = b"0," * 2**19
    body = (chunk for _ in range(size // len(chunk)))
    path = streamed_zip(tmp_path / "bomb.mltrace", [b'{"format":"mltrace","schema_version":2,"trace":[', *body, b"0]}"])
    assert path.stat().st_size < 2**20
    peak = refused(path, rf"trace.json would unpack to [\d,]+ bytes, over the limit of {MAX_JSON_BYTES:,}")
    assert peak < 2**20


def test_millions_of_elements_within_the_byte_limit_are_refused_before_parsing(tmp_path, monkeypatch):
    """40 MB of "{}," is 13 million JSON elements: json.loads would build 13 million dicts (GBs).
    The pre-scan counts them in numpy and refuses the text before a Python object is built."""
    count = 13 * 2**20
    path = streamed_zip(tmp_path / "elements.mltrace",
                        [b'{"format":"mltrace","schema_version":2,"trace":[', b"{}," * count, b"{}]}"])

    def never_parsed(*args, **kwargs):
        raise AssertionError("json.loads was called on a text the pre-scan must refuse")

    monkeypatch.setattr(json, "loads", never_parsed)
    peak = refused(path, rf"holds [\d,]+ elements, over the limit of {MAX_JSON_ELEMENTS:,}")
    # Measured: a peak of twice the text (its chunks, then joined); json.loads built 1 GB.
    assert peak < 2.5 * len(b"{},") * count


@pytest.mark.parametrize("depth", [200_000, 40])
def test_deep_nesting_is_a_trace_error_not_a_recursion_error(tmp_path, capsys, depth):
    """Item 13: 200,000 nested "[" raised RecursionError from load() and the CLI."""
    text = b'{"format":"mltrace","schema_version":2,"trace":' + b"[" * depth + b"]" * depth + b"}"
    path = write_zip(tmp_path / "deep.mltrace", {"trace.json": text, "tensors.safetensors": save_safetensors({})})
    refused(path, rf"trace.json nests {depth + 1:,} levels deep, over the limit of 32")
    assert inspector.__main__.main(["show", str(path)]) == 2
    assert "levels deep" in capsys.readouterr().err


@pytest.mark.parametrize(("value", "message"), [
    (float("nan"), "NaN is not a JSON number"),
    ("DIGITS", "not valid JSON"),  # 5,000 digits: past Python's limit on converting text to int
    ("\ud800", "lone UTF-16 surrogate"),  # no UTF-8 page can carry it: the browser update would fail
])
def test_json_constants_and_text_no_page_can_carry_are_refused(saved, tmp_path, value, message):
    document = json.loads(members(saved)["trace.json"])
    document["trace"]["model"]["name"] = value
    text = json.dumps(document).replace('"DIGITS"', "1" * 5000)
    refused(write_zip(tmp_path / "c.mltrace", {**members(saved), "trace.json": text.encode()}), message)


def test_trace_json_that_is_not_utf8_is_refused(saved, tmp_path):
    path = write_zip(tmp_path / "latin.mltrace", {**members(saved), "trace.json": b'{"format": "\xe9"}'})
    refused(path, "trace.json is not UTF-8 text")


# -- the zip -------------------------------------------------------------------------------------


def understated(path: Path, name: str, data: bytes, declared: int, tensors: bytes) -> Path:
    """A zip whose member `name` holds `data` (deflated) but declares `declared` bytes, in both
    its local header and the central directory."""
    write_zip(path, {name: data, "tensors.safetensors": tensors})
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        local = zf.getinfo(name).header_offset
    struct.pack_into("<I", raw, local + 22, declared)  # the local header's uncompressed size
    central = raw.index(b"PK\x01\x02")  # the central directory's entries: find the member's
    while raw[central + 46 : central + 46 + len(name)] != name.encode():
        central = raw.index(b"PK\x01\x02", central + 4)
    struct.pack_into("<I", raw, central + 24, declared)
    path.write_bytes(bytes(raw))
    return path


def test_a_member_understating_its_size_is_read_in_bounded_chunks(saved, tmp_path):
    """Item 8: a member declaring 1,000 bytes but holding 50 MB of zeros. ZipFile.read() inflated
    all 50 MB before cutting it to 1,000 (about 1 GiB per member for a bigger bomb); read in
    1 MiB chunks, it stops at the declared size and the checksum fails."""
    path = understated(tmp_path / "liar.mltrace", "trace.json", bytes(50 * 2**20), 1000,
                       members(saved)["tensors.safetensors"])
    assert path.stat().st_size < 2**20
    peak = refused(path, "truncated or damaged")
    assert peak < 4 * 2**20


def test_a_directory_an_unreadable_file_and_a_fifo_are_named_so(saved, tmp_path, capsys):
    refused(tmp_path, "is a directory, not a trace file")
    assert inspector.__main__.main(["show", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    fifo = tmp_path / "pipe.mltrace"
    os.mkfifo(fifo)
    refused(fifo, "is not a regular file")
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.mltrace"
        locked.write_bytes(saved.read_bytes())
        locked.chmod(0)
        refused(locked, "cannot be read: permission denied")


def test_the_size_limit_message_suits_a_browser_user(saved):
    with pytest.raises(TraceError) as error:
        load(saved, max_bytes=1000)
    assert "is too large: it would unpack to" in str(error.value) and "over the limit of 1,000 bytes" in str(error.value)
    assert "max_bytes" not in str(error.value)


def test_a_zip_directory_of_thousands_of_members_is_refused_before_it_is_parsed(saved, tmp_path):
    """zipfile reads the central directory whole and builds a ZipInfo per member (500,000 of
    them: 2.5 s and 280 MB): a trace has two."""
    path = tmp_path / "crowded.mltrace"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members(saved).items():
            zf.writestr(name, data)
        for i in range(60_000):  # 3 MB of directory
            zf.writestr(f"x{i}", b"")
    refused(path, "its zip directory is [\\d,]+ bytes, far more than a trace's two members need")


def test_a_bzip2_member_is_refused_unread(saved, tmp_path):
    """zipfile inflates bzip2 and LZMA members with no bound on the output."""
    path = write_zip(tmp_path / "bz.mltrace", members(saved), zipfile.ZIP_BZIP2)
    refused(path, "compressed with zip method 12; a trace's members are stored or deflated")


# -- tensors.safetensors ------------------------------------------------------------------------


def edited_tensors(saved: Path, tmp_path: Path, edit) -> Path:
    contents = members(saved)
    tensors = load_safetensors(contents["tensors.safetensors"])
    edit(tensors)
    return write_zip(tmp_path / "tensors.mltrace", {**contents, "tensors.safetensors": save_safetensors(tensors)})


def test_more_tensors_than_the_limit_are_refused_before_one_is_built(saved, tmp_path, monkeypatch):
    count = len(load_safetensors(members(saved)["tensors.safetensors"]))
    monkeypatch.setattr(tensor_member, "MAX_TENSORS", count)
    path = edited_tensors(saved, tmp_path, lambda t: t.update(extra=torch.zeros(0)))
    refused(path, rf"holds {count + 1:,} tensors, over the limit of {count:,}")


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: t.update(extra=torch.zeros(3)), "holds 1 tensor\\(s\\) the trace does not reference, such as 'extra'"),
    (lambda t: t.update(extra=torch.zeros(3, dtype=torch.float64)), "tensor 'extra' has dtype 'F64', which no trace holds"),
    (lambda t: t.update({"trace.steps.1.kv.fill": t["trace.steps.1.kv.fill"].bool()}), "kv.fill is torch.bool"),
])
def test_extra_tensors_and_wrong_dtypes_are_refused(saved, tmp_path, edit, message):
    refused(edited_tensors(saved, tmp_path, edit), message)


def test_a_tensor_referenced_twice_is_refused(saved, tmp_path):
    """Each tensor has one path: shared, a small file could stand for a large trace."""
    document = json.loads(members(saved)["trace.json"])
    document["trace"]["steps"][1]["kv"]["fill"] = {"tensor": "trace.steps.0.kv.fill"}
    path = write_zip(tmp_path / "twice.mltrace", {**members(saved), "trace.json": json.dumps(document).encode()})
    refused(path, "referenced a second time")


def test_a_store_holding_nan_is_refused(saved, tmp_path):
    def poison(tensors):
        name = next(n for n in tensors if n.endswith(".q"))
        tensors[name][0, 0, 0, 0] = float("nan")

    refused(edited_tensors(saved, tmp_path, poison), "holds a query or key that is not finite")


def test_huge_finite_queries_and_keys_give_attention_rows_that_sum_to_one(saved, tmp_path):
    """Finite, so valid; but a score of two of them overflows fp32: the rows are computed wider."""
    def enlarge(tensors):
        for name in tensors:
            if name.endswith((".q", ".k")):
                tensors[name].mul_(1e30)

    trace = load(edited_tensors(saved, tmp_path, enlarge))
    seq_id = next(iter(trace.attention))
    store = trace.attention[seq_id]
    position = int(torch.nonzero(store.q_step >= 0)[-1])
    row = trace.attention_row(seq_id, store.layers[0], 0, position)
    assert bool(torch.isfinite(row).all()) and abs(float(row.sum()) - 1) < 1e-5
    queries, matrix = attention_matrix(trace, seq_id, store.layers[0], None, position)
    assert bool(torch.isfinite(matrix[-1]).all()) and abs(float(matrix[-1].sum()) - 1) < 1e-5


def test_damaged_safetensors_headers_are_refused(saved, tmp_path):
    for raw, message in ((b"\xff" * 8 + b"{}", "its header length .* exceeds the file"),
                         (struct.pack("<Q", 2) + b"[]", "its header is not an object"),
                         (struct.pack("<Q", 30) + b'{"a":' * 6, "its header nests")):
        path = write_zip(tmp_path / "h.mltrace", {**members(saved), "tensors.safetensors": raw})
        refused(path, message)


def with_header_entry(raw: bytes, name: str, entry: str) -> bytes:
    """The safetensors file `raw` with `"name": entry` (JSON text) added first in its header."""
    size = struct.unpack("<Q", raw[:8])[0]
    header = b'{"%s": %s, ' % (name.encode(), entry.encode()) + raw[9 : 8 + size]
    return struct.pack("<Q", len(header)) + header + raw[8 + size :]


@pytest.mark.parametrize(("entry", "message"), [
    # No bytes, so safetensors lets it through; torch failed to make it with a TypeError.
    ('{"dtype": "F32", "shape": [0, 18446744073709551615], "data_offsets": [0, 0]}', "has shape \\[0, 1844"),
    ('{"dtype": "F32", "shape": [0, -1], "data_offsets": [0, 0]}', "has shape \\[0, -1\\]"),
    ('{"dtype": "F32", "shape": [0, 1, 1, 1, 1], "data_offsets": [0, 0]}', "has shape \\[0, 1, 1, 1, 1\\]"),
    ('{"dtype": "F32", "shape": "12", "data_offsets": [0, 0]}', "has shape 12"),
    ('{"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}, "trace.steps.0.kv.fill": {}', "appears twice"),
])
def test_tensor_header_entries_no_trace_has_are_refused(saved, tmp_path, entry, message):
    raw = with_header_entry(members(saved)["tensors.safetensors"], "extra" if "appears" not in message else
                            "trace.steps.0.kv.fill", entry)
    refused(write_zip(tmp_path / "shape.mltrace", {**members(saved), "tensors.safetensors": raw}), message)


def test_a_key_twice_in_one_object_of_trace_json_is_refused(saved, tmp_path):
    """Python's json keeps the last value of a repeated key, other readers the first: the same
    file would be two different traces."""
    raw = members(saved)["trace.json"]
    path = write_zip(tmp_path / "twice.mltrace", {**members(saved), "trace.json": b'{"schema_version": 1, ' + raw[1:]})
    refused(path, "the key 'schema_version' appears twice in one object")


def nul_named(saved: Path, path: Path) -> Path:
    """The trace with its trace.json member named "trace.json\\0x" (zipfile cuts names at a NUL
    when it reads them, and writes them cut, so the name is patched in the bytes)."""
    write_zip(path, {"trace.jsonXx" if name == "trace.json" else name: data for name, data in members(saved).items()})
    path.write_bytes(path.read_bytes().replace(b"trace.jsonXx", b"trace.json\0x"))
    return path


@pytest.mark.parametrize(("make", "message"), [
    (lambda saved, path: path.write_bytes(b"#!/bin/sh\necho hi\n" + saved.read_bytes()), "data before its zip's first"),
    (lambda saved, path: path.write_bytes(saved.read_bytes() + b"GARBAGE" * 10), "data after its zip's end"),
    (lambda saved, path: path.write_bytes(saved.read_bytes()[:-2] + b"\x05\x00hello"), "or a zip comment"),
    (nul_named, "a member whose name has a NUL byte"),
])
def test_anything_a_zip_reader_would_skip_or_cut_is_refused(saved, tmp_path, make, message):
    """Bytes before or after the zip, a zip comment, or a member name cut at a NUL: zip readers
    skip or cut them, so a file could carry anything unseen beside a trace that loads."""
    path = tmp_path / "around.mltrace"
    make(saved, path)
    refused(path, message)


def test_a_steps_token_is_found_by_sequence_id_as_the_step_grows(saved):
    """token_of answers from a dict (a scan per lookup made a trace of 20,000 one-token requests,
    660 KB, load in 16 s and redraw in 34): the same answers as the scan, the first token of a
    sequence listed twice, and a token appended after the first lookup."""
    step = next(s for s in load(saved).steps if len(s.tokens) >= 2)
    for token in step.tokens:
        assert step.token_of(token.seq_id) is token
    assert step.token_of(10**6) is None
    step.tokens.append(dataclasses.replace(step.tokens[0], token_id=1))  # the same sequence again
    step.tokens.append(dataclasses.replace(step.tokens[0], seq_id=10**6))
    assert step.token_of(step.tokens[0].seq_id) is step.tokens[0]
    assert step.token_of(10**6) is step.tokens[-1]


# -- the zip's members, and what a message quotes from the file ---------------------------------


def test_a_small_deflated_tensors_member_cannot_claim_gigabytes(saved, tmp_path):
    """A 1 MB file deflating to 1 GiB of zeros made load() hold 2.3 GB before it looked at the
    safetensors header: memory must follow the file's own size, so the packed/unpacked ratio
    is checked before anything is unpacked."""
    path = tmp_path / "bomb.mltrace"
    info = zipfile.ZipInfo("tensors.safetensors")
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("trace.json", members(saved)["trace.json"], compress_type=zipfile.ZIP_DEFLATED)
        with zf.open(info, "w", force_zip64=True) as member:
            for _ in range(64):
                member.write(bytes(2**20))
    peak = refused(path, r"tensors.safetensors would inflate [\d,]+ bytes to 67,108,864, more than 16x")
    assert peak < 2**20


@pytest.mark.parametrize(("extra", "message"), [
    ({"evil.py": b"print(1)"}, "holds a member no trace has, 'evil.py'"),
    ({"../../x": b""}, "holds a member no trace has, '../../x'"),
    ({"trace.json": b"{}"}, "holds trace.json 2 times"),
])
# zipfile warns as it writes the second trace.json: that file is the point of the test.
@pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")
def test_the_zip_holds_the_two_members_once_each_and_nothing_else(saved, tmp_path, extra, message):
    """With a name twice zip readers disagree on which counts; anything else would travel
    unseen with a trace that looks valid."""
    path = tmp_path / "extra.mltrace"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in [*members(saved).items(), *extra.items()]:
            zf.writestr(name, data)
    refused(path, message)


def test_a_top_level_field_no_trace_has_is_refused(saved, tmp_path):
    document = json.loads(members(saved)["trace.json"])
    document["x"] = 1
    path = write_zip(tmp_path / "field.mltrace", {**members(saved), "trace.json": json.dumps(document).encode()})
    refused(path, "trace.json has a field no trace has, 'x'")


@pytest.mark.parametrize("key", ["\x1b[2J\x1b[31mPWNED<script>", "A" * 1_000_000])
def test_a_key_from_the_file_is_quoted_short_and_printable(saved, tmp_path, capsys, key):
    """A bad dict key is part of the error's path: raw, an ESC cleared the reader's terminal and
    a 5 MB key made a 5 MB line."""
    document = json.loads(members(saved)["trace.json"])
    sequences = document["trace"]["sequences"]
    sequences[key] = sequences.pop(next(iter(sequences)))
    path = write_zip(tmp_path / "key.mltrace", {**members(saved), "trace.json": json.dumps(document).encode()})
    refused(path, "is not an integer")
    assert inspector.__main__.main(["show", str(path)]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and len(err) < 500 and "is not an integer" in err


@pytest.mark.parametrize("field", ["start_ms", "wall_ms", "forward_ms"])
def test_times_past_any_run_are_refused(saved, tmp_path, field):
    """A time of 1e308 ms loaded, and export-chrome then wrote Infinity (its microseconds),
    which strict JSON readers such as Perfetto refuse."""
    document = json.loads(members(saved)["trace.json"])
    document["trace"]["steps"][1]["timings"][field] = 1e308
    path = write_zip(tmp_path / "time.mltrace", {**members(saved), "trace.json": json.dumps(document).encode()})
    refused(path, f"timings.{field}")
