"""tensors.safetensors from an untrusted file: its header checked before any tensor is built.

A safetensors file is an 8-byte header length, a JSON header ({name: {dtype, shape,
data_offsets}}), then the raw arrays. safetensors checks that the offsets and shapes fit the
data, but builds a tensor for every entry the header lists, however small (100,000 empty ones
take about 0.9 s and tens of MB), and may list dtypes torch lacks. So the header is read here
first: bounded JSON, at most MAX_TENSORS entries, each of a dtype a trace uses. Which tensors
the trace references, and their dtypes and shapes, the codec and validate.py check after.
"""

from __future__ import annotations

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors

from inspector.trace.json_limits import parse
from inspector.trace.model import TraceError, TraceTooLarge
from minillama import is_int

# A trace holds 8 tensors a step (its KV snapshot) and 3 a traced sequence (Q, K, q_step):
# this is 8,192 steps. Each tensor has a fixed cost to build, however small: 2**16 of them,
# header included, load in about a second (docs/perf-notes.md).
MAX_TENSORS = 2**16
DTYPES = frozenset({"BOOL", "I32", "I64", "F32", "F16", "BF16"})  # the KV snapshots' and the Q/K stores'
# An entry is about a dozen JSON elements ({, :, the shape's dims...); the header nests 3 deep.
HEADER_ELEMENTS_PER_TENSOR = 16
HEADER_DEPTH = 3
# A trace's tensors have at most 4 dimensions (a Q/K store: positions, layers, heads, head_dim),
# each far under 2**31 (a file's size bounds their product).
MAX_DIMS, MAX_DIM = 4, 2**31 - 1


def load_tensors(raw: bytes, what: str) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file `raw`; TraceError naming `what` when it is damaged,
    holds too many tensors, or one of a dtype no trace has."""
    check_header(raw, what)
    try:
        return load_safetensors(raw)
    except (SafetensorError, ValueError, RuntimeError, OverflowError, TypeError) as exc:
        raise TraceError(f"{what} is damaged: {str(exc)[:200]}") from None


def check_tensor_count(count: int, what: str) -> None:
    """TraceTooLarge naming `what` when it holds more than MAX_TENSORS tensors."""
    if count > MAX_TENSORS:
        raise TraceTooLarge(f"{what} holds {count:,} tensors, over the limit of {MAX_TENSORS:,}")


def check_header(raw: bytes, what: str) -> None:
    """The header of the safetensors file `raw`, checked before any tensor is built: what
    load_tensors() refuses, and what save() refuses before writing (TraceTooLarge for a count
    over MAX_TENSORS, TraceError for the rest)."""
    size = int.from_bytes(raw[:8], "little")
    if len(raw) < 8 or size > len(raw) - 8:
        raise TraceError(f"{what} is damaged: its header length {size:,} exceeds the file")
    header = parse(raw[8 : 8 + size], f"{what} is damaged: its header", HEADER_DEPTH,
                   HEADER_ELEMENTS_PER_TENSOR * MAX_TENSORS)
    if not isinstance(header, dict):
        raise TraceError(f"{what} is damaged: its header is not an object")
    entries = {name: entry for name, entry in header.items() if name != "__metadata__"}
    check_tensor_count(len(entries), what)
    for name, entry in entries.items():
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        if dtype not in DTYPES:
            raise TraceError(f"{what}: tensor {name[:60]!r} has dtype {str(dtype)[:20]!r}, which no trace holds")
        # safetensors checks a shape against the bytes it spans, and [0, 2**64 - 1] spans none:
        # torch then failed to make it with a TypeError no caller expects.
        shape = entry.get("shape")
        if not (isinstance(shape, list) and len(shape) <= MAX_DIMS
                and all(is_int(d) and 0 <= d <= MAX_DIM for d in shape)):
            raise TraceError(f"{what}: tensor {name[:60]!r} has shape {str(shape)[:40]}, which no trace holds")
