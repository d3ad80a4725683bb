"""The .mltrace file: one zip holding trace.json and tensors.safetensors.

    save(trace, "run.mltrace")
    trace = load("run.mltrace")   # no model needed

trace.json holds the trace's structure (format name, schema version, everything but arrays);
tensors.safetensors holds its arrays (Q/K stores, KV snapshots), named by their path in the
trace. Neither format can run code when read, unlike pickle, which is never used.

load() treats the file as untrusted: it checks the member sizes the zip declares before
unpacking anything (zip's reader never returns more than the declared size, so a zip bomb
stops there), then the JSON, the schema version (only this inspector's own is read), every
field's type and the arrays' shapes, and raises TraceError with the reason for the first thing
that is wrong.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from inspector.codec import decode, encode
from inspector.trace import SCHEMA_VERSION, Trace, TraceError
from inspector.validate import validate_trace

FORMAT = "mltrace"
JSON_MEMBER = "trace.json"
TENSORS_MEMBER = "tensors.safetensors"
DEFAULT_MAX_BYTES = 4 * 2**30  # unpacked size load() accepts unless told otherwise


def save(trace: Trace, path: str | Path) -> None:
    """Write `trace` to `path` (atomically: a crash never leaves half a file behind)."""
    tensors: dict[str, torch.Tensor] = {}
    document = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "trace": encode(trace, tensors, "trace")}
    text = json.dumps(document, allow_nan=False, separators=(",", ":"))
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    try:
        with zipfile.ZipFile(partial, "w") as zf:
            zf.writestr(JSON_MEMBER, text, compress_type=zipfile.ZIP_DEFLATED)
            # Q/K values barely compress; the int arrays are small. Stored, the file saves fast.
            zf.writestr(TENSORS_MEMBER, save_safetensors(tensors), compress_type=zipfile.ZIP_STORED)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def load(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> Trace:
    """Read and validate a .mltrace file. Raises TraceError naming what is wrong."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            members = {info.filename: info for info in zf.infolist()}
            for name in (JSON_MEMBER, TENSORS_MEMBER):
                if name not in members:
                    raise TraceError(f"{path} is not a complete trace: it has no {name}")
            unpacked = members[JSON_MEMBER].file_size + members[TENSORS_MEMBER].file_size
            if unpacked > max_bytes:
                raise TraceError(
                    f"{path} would unpack to {unpacked:,} bytes, over the limit of {max_bytes:,}; "
                    "if you trust the file, load it with a larger max_bytes"
                )
            raw_json = zf.read(JSON_MEMBER)
            raw_tensors = zf.read(TENSORS_MEMBER)
    except FileNotFoundError:
        raise TraceError(f"{path} does not exist") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        # RuntimeError: an encrypted member; NotImplementedError: an unknown compression.
        raise TraceError(f"{path} is not a .mltrace file, or it is truncated or damaged (zip: {exc})") from None
    document = _parse_json(path, raw_json)
    try:
        tensors = load_safetensors(raw_tensors)
    except (SafetensorError, ValueError) as exc:
        raise TraceError(f"{path}: {TENSORS_MEMBER} is damaged: {exc}") from None
    trace = decode(Trace, document["trace"], tensors, "trace")
    validate_trace(trace)
    return trace


def _parse_json(path: Path, raw: bytes) -> dict:
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TraceError(f"{path}: {JSON_MEMBER} is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise TraceError(f"{path}: {JSON_MEMBER} is not an {FORMAT} document")
    version = document.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise TraceError(f"{path}: bad schema_version {version!r}")
    if version > SCHEMA_VERSION:
        raise TraceError(
            f"{path} uses trace schema version {version}, newer than this inspector's ({SCHEMA_VERSION}); "
            "update mini-llama to read it"
        )
    if version < SCHEMA_VERSION:
        raise TraceError(
            f"{path} uses trace schema version {version}, older than this inspector's ({SCHEMA_VERSION}), which "
            "no longer reads it (version 2 changed the layout of the KV snapshots); record the run again"
        )
    if "trace" not in document:
        raise TraceError(f"{path}: {JSON_MEMBER} has no trace")
    return document
