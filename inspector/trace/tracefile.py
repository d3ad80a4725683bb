"""The .mltrace file: one zip holding trace.json and tensors.safetensors.

    save(trace, "run.mltrace")
    trace = load("run.mltrace")   # no model needed

trace.json holds the trace's structure (format name, schema version, everything but arrays);
tensors.safetensors holds its arrays (Q/K stores, KV snapshots), named by their path in the
trace. Neither format can run code when read, unlike pickle, which is never used.

load() treats the file as untrusted (it may come from anyone on the LAN) and either returns a
trace that is valid in every field or refuses the file whole, with a TraceError naming the
first problem. In the order it checks:

- the file: a readable regular file (a directory, a missing or unreadable file is named so);
- the zip (zip_members.py): its directory read only when small; its two members, each once
  and nothing else; their declared sizes against the limits, tensors.safetensors' against its
  packed size too, before anything is unpacked; then each member unpacked 1 MiB at a time and
  counted, so one that holds more than it declares stops at the first byte over;
- trace.json: at most MAX_JSON_BYTES, its nesting and element count bounded before it is
  parsed (json_limits.py), its format and schema version (only this inspector's own), and
  no top-level field but those;
- tensors.safetensors: its header's tensor count and dtypes, before a tensor is built
  (tensor_member.py);
- every field's type, enum value and range (codec.py against trace.py's schema); every tensor
  referenced, and no other; then that the parts agree (validate.py).

save() checks the file it is about to write by the same functions (one definition of each
limit), so that what it writes load() opens again: a trace over a limit (TraceTooLarge) or with a
field load() would refuse is refused before anything is written. The zip's own shape (two
members, stored or deflated, nothing around them) holds by how save() writes it.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections import Counter
from pathlib import Path

import torch
from safetensors.torch import save as save_safetensors

from inspector.trace.arguments import file_path, instance, output_file, whole
from inspector.trace.codec import decode, encode, stored_tensor
from inspector.trace.json_limits import parse
from inspector.trace.model import OLDEST_READABLE_VERSION, SCHEMA_VERSION, Trace, TraceError, TraceTooLarge
from inspector.trace.replacing import replacing
from inspector.trace.tensor_member import check_header, load_tensors
from inspector.trace.validate import validate_trace
from inspector.trace.zip_members import CHUNK, check_nothing_around, open_zip, read_member

FORMAT = "mltrace"
JSON_MEMBER = "trace.json"
TENSORS_MEMBER = "tensors.safetensors"
DEFAULT_MAX_BYTES = 4 * 2**30  # unpacked size load() accepts unless told otherwise
MAX_BYTES_LIMIT = 2**63 - 1  # the largest max_bytes: a zip's sizes are 64-bit
# trace.json's own limits, whatever max_bytes says: they bound the Python objects parsing it
# builds and the time to check them. The worst files per byte found under them (valid, built
# by tests/wide_traces.py; Python calls counted, seconds best of 3 on 2 cores with CPython's
# default collector, which `python -m inspector` and the server tune: about a quarter less):
# 40,000 one-token requests at the element limit, 0.98 MB: 6.7 million calls, 2.3 s; 8,000
# steps at the tensor limit, 0.6 MB deflated: 3.1 million, 2.0 s; a chain of 30,000 forks,
# 0.86 MB: 5.9 million, 2.2 s; 2,000 requests queued over 200 steps, each with its wait cause,
# 1.3 MB: 4.6 million, 1.7 s. tests/test_trace_load_cost.py holds the calls per element to a
# budget. Measured: a 300-step run of 8 requests on a 30-layer model, the logit lens on two of
# them, writes 6.0 MB of trace.json and 583,000 elements, and loads in about half a second; the
# limits leave 10x and 7x that.
MAX_JSON_BYTES = 64 * 2**20
MAX_JSON_ELEMENTS = 2**22
MAX_JSON_DEPTH = 32  # the schema nests 9 deep
JSON_SEPARATORS = (",", ":")  # trace.json as save() writes it: compact
# tensors.safetensors may unpack to at most this many times its packed size (save() stores it:
# 1x). Unpacking holds it in memory, so memory follows the file's own size, not its claims.
MAX_INFLATION = 16


# What save() says when a trace is over a limit (TraceTooLarge names which): what shrinks one.
SMALLER = ("load() refuses a file over a limit: record fewer steps or requests, a smaller logits top-k, attention "
           "for fewer requests, or no logit lens")


def save(trace: Trace, path: str | Path) -> None:
    """Write `trace` to `path` (atomically: a crash never leaves half a file behind).

    What it writes, load() reads back equal: the file is checked, before anything is written, by
    the code load() checks it with (_members). Refused, leaving `path` as it was: ArgumentError
    for a `trace` that is no Trace or a `path` that is no file path; TraceError for a path where
    no file can be written (a folder, a device, in a folder that does not exist), and, naming
    the field, for a trace load() would refuse (a NaN or an infinite number, a record left
    incomplete, a value out of its field's range); TraceTooLarge, naming the limit and saying
    what shrinks a recording, for a trace over one of the file's limits."""
    instance(trace, Trace, "trace")
    path = output_file(path)
    try:
        raw_json, raw_tensors = _members(trace, path)
    except TraceTooLarge as error:
        raise TraceTooLarge(f"{error}; not saved: {SMALLER}") from None
    except TraceError as error:
        raise TraceError(f"{error}; not saved") from None
    with replacing(path) as partial, zipfile.ZipFile(partial, "x") as zf:
        zf.writestr(JSON_MEMBER, raw_json, compress_type=zipfile.ZIP_DEFLATED)
        # Q/K values barely compress; the int arrays are small. Stored, the file saves fast (and
        # its tensors member is within MAX_INFLATION of its packed size: 1x).
        zf.writestr(TENSORS_MEMBER, raw_tensors, compress_type=zipfile.ZIP_STORED)


def _members(trace: Trace, path: Path) -> tuple[bytes, bytes]:
    """(trace.json, tensors.safetensors) of `trace`, each checked by the code load() checks the
    file's with, cheapest first: trace.json's size, then the JSON parsed as load() parses it,
    which first counts its depth and elements on the bytes (a trace over them is refused before
    a Python object is built, or a tensor copied), and reads what the file will say, not what
    the Python objects said (a numpy number, a tuple); the tensors' header and the whole size;
    every field decoded (the tensors by reference, none copied), and the parts' agreement."""
    name = Path(path.name)  # the messages name the file, not its folder (the server's, for the web UI)
    tensors: dict[str, torch.Tensor] = {}
    document = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "trace": encode(trace, tensors, "trace")}
    raw_json = _strict_json(document).encode()  # ASCII: json.dumps escapes the rest
    del document
    check_member_sizes(name, len(raw_json), 0, DEFAULT_MAX_BYTES)
    parsed = _parse_document(name, raw_json)
    tensors = {tensor_name: stored_tensor(tensor) for tensor_name, tensor in tensors.items()}
    raw_tensors = save_safetensors(tensors)
    check_header(raw_tensors, f"{name}: {TENSORS_MEMBER}")
    check_member_sizes(name, len(raw_json), len(raw_tensors), DEFAULT_MAX_BYTES)
    validate_trace(decode(Trace, parsed["trace"], tensors, "trace"))
    for tensor_name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise TraceError(f"{tensor_name} holds a NaN or an infinite value, which no trace file holds")
    return raw_json, raw_tensors


def check_member_sizes(path: Path | str, json_size: int, tensors_size: int, max_bytes: int) -> None:
    """The members' unpacked sizes against max_bytes (both together) and MAX_JSON_BYTES
    (trace.json's own): load() checks a file's declared sizes with it, save() the bytes it
    writes, and file_meter.py a recording's as it grows."""
    unpacked = json_size + tensors_size
    if unpacked > max_bytes:
        raise TraceTooLarge(f"{path} is too large: it would unpack to {unpacked:,} bytes, over the limit of "
                            f"{max_bytes:,} bytes")
    if json_size > MAX_JSON_BYTES:
        raise TraceTooLarge(f"{path} is too large: its {JSON_MEMBER} would unpack to {json_size:,} bytes, over the "
                            f"limit of {MAX_JSON_BYTES:,} bytes")


def _strict_json(document: dict) -> str:
    """`document` as JSON with no NaN or Infinity (which load() refuses, as JSON has neither);
    TraceError naming the first field that holds one."""
    try:
        return json.dumps(document, allow_nan=False, separators=JSON_SEPARATORS)
    except ValueError:
        found = _non_finite(document["trace"], "trace")
        if found is None:  # not a number's fault (a reference cycle): its own message says what
            raise
        where, value = found
        raise TraceError(f"{where} is {value!r}, not a finite number, which no trace file holds") from None


def _non_finite(value: object, path: str) -> tuple[str, float] | None:
    """The path and value of the first NaN or infinity in an encoded trace, or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value)
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return next((found for key, child in children if (found := _non_finite(child, f"{path}.{key}"))), None)


def load(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> Trace:
    """Read and validate a .mltrace file. Raises TraceError naming what is wrong.

    max_bytes bounds what the file may unpack to (both members together). It protects against
    files from elsewhere; a trusted file over the default loads with a larger max_bytes.
    ArgumentError for a `path` that is no file path (bytes, an open file: give its name) or a
    `max_bytes` that is not an integer >= 1."""
    path = file_path(path)
    whole(max_bytes, "max_bytes", minimum=1, maximum=MAX_BYTES_LIMIT)
    with open_zip(path) as zf:
        json_info, tensors_info = _the_two_members(path, zf.infolist())
        check_nothing_around(zf, path)
        if tensors_info.file_size > max(CHUNK, MAX_INFLATION * tensors_info.compress_size):
            # save() stores it; a small file must not make load() hold gigabytes it does not contain.
            raise TraceError(f"{path}: {TENSORS_MEMBER} would inflate {tensors_info.compress_size:,} bytes to "
                             f"{tensors_info.file_size:,}, more than {MAX_INFLATION}x; a trace stores it uncompressed")
        check_member_sizes(path, json_info.file_size, tensors_info.file_size, max_bytes)
        raw_json = read_member(zf, json_info, f"{path}: {JSON_MEMBER}")
        raw_tensors = read_member(zf, tensors_info, f"{path}: {TENSORS_MEMBER}")
    document = _parse_document(path, raw_json)
    del raw_json
    tensors = load_tensors(raw_tensors, f"{path}: {TENSORS_MEMBER}")
    del raw_tensors  # the tensors hold copies
    used: set[str] = set()
    trace = decode(Trace, document["trace"], tensors, "trace", used)
    if len(used) != len(tensors):
        extra = sorted(set(tensors) - used)
        raise TraceError(f"{path}: {TENSORS_MEMBER} holds {len(extra):,} tensor(s) the trace does not reference, "
                         f"such as {extra[0][:60]!r}")
    validate_trace(trace)
    return trace


def _the_two_members(path: Path, infos: list[zipfile.ZipInfo]) -> tuple[zipfile.ZipInfo, zipfile.ZipInfo]:
    """trace.json's and tensors.safetensors' entries, the zip holding those two once each and
    nothing else: with a name twice, zip readers disagree on which one counts, and what else a
    file carries would travel unseen with a trace that looks valid."""
    names = [info.filename for info in infos]
    counts = Counter(names)  # once, not a count per name: a zip may list tens of thousands
    for name in (JSON_MEMBER, TENSORS_MEMBER):
        if name not in counts:
            raise TraceError(f"{path} is not a complete trace: it has no {name}")
    for info in infos:  # zipfile cuts a name at a NUL: "trace.json\x00x" would pass as trace.json
        if info.orig_filename != info.filename:
            raise TraceError(f"{path} holds a member whose name has a NUL byte, {info.orig_filename[:60]!r}")
    for name in names:
        if name not in (JSON_MEMBER, TENSORS_MEMBER):
            raise TraceError(f"{path} holds a member no trace has, {name[:60]!r}: "
                             f"a .mltrace holds {JSON_MEMBER} and {TENSORS_MEMBER} only")
        if counts[name] > 1:
            raise TraceError(f"{path} holds {name} {counts[name]} times")
    by_name = {info.filename: info for info in infos}
    return by_name[JSON_MEMBER], by_name[TENSORS_MEMBER]


def _parse_document(path: Path, raw: bytes) -> dict:
    document = parse(raw, f"{path}: {JSON_MEMBER}", MAX_JSON_DEPTH, MAX_JSON_ELEMENTS)
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise TraceError(f"{path}: {JSON_MEMBER} is not an {FORMAT} document")
    unknown = sorted(set(document) - {"format", "schema_version", "trace"})
    if unknown:
        raise TraceError(f"{path}: {JSON_MEMBER} has a field no trace has, {unknown[0][:40]!r}")
    version = document.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        shown = repr(version)[:40] if isinstance(version, (int, str)) else f"(a {type(version).__name__})"
        raise TraceError(f"{path}: bad schema_version {shown}")
    if version > SCHEMA_VERSION:
        raise TraceError(
            f"{path} uses trace schema version {version}, newer than this inspector's ({SCHEMA_VERSION}); "
            "update mini-llama to read it"
        )
    if version < OLDEST_READABLE_VERSION:
        raise TraceError(
            f"{path} uses trace schema version {version}, older than this inspector reads ({OLDEST_READABLE_VERSION}"
            " and later: version 2 changed the layout of the KV snapshots); record the run again"
        )
    if "trace" not in document:
        raise TraceError(f"{path}: {JSON_MEMBER} has no trace")
    return document
