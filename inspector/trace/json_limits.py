"""JSON from an untrusted file, parsed only once its size is known to be bounded.

json.loads builds the whole document before anything can look at it, and recurses once per
nesting level: 400 MB of "[0,0,0,...]" becomes 200 million Python objects (GBs, seconds), and
200,000 nested "[" raise RecursionError. So parse() first scans the bytes, in numpy, for the
two numbers that bound what json.loads would build, and refuses the text when either is over
its limit:

- depth: the deepest nesting of [ and {;
- elements: every [ and {, comma and colon, about the number of values and keys.

Brackets, commas and colons inside strings do not count. A string is delimited by unescaped
quotes: once every escaped pair (backslash-backslash, then backslash-quote) is removed, the
quotes left are exactly the delimiters, and a running count of them is odd inside a string.
The scan goes by chunks of CHUNK bytes, so its memory stays a few times CHUNK whatever the
text's size; a 24 MB text scans in about 0.15 s.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from inspector.trace.model import TraceError, TraceTooLarge

CHUNK = 2**20
# Byte classes for the scan: one table lookup per byte instead of a comparison per character.
OTHER, QUOTE, OPEN, CLOSE, SEPARATOR = range(5)
_CLASSES = np.zeros(256, np.int8)
_CLASSES[ord('"')] = QUOTE
_CLASSES[[ord("["), ord("{")]] = OPEN
_CLASSES[[ord("]"), ord("}")]] = CLOSE
_CLASSES[[ord(","), ord(":")]] = SEPARATOR


def parse(raw: bytes, what: str, max_depth: int, max_elements: int) -> Any:
    """The JSON value of `raw` (UTF-8); TraceError naming `what` when it is not JSON, or nests
    deeper than max_depth, or holds more than max_elements elements (see the module docstring)."""
    check_bounds(raw, what, max_depth, max_elements)
    try:
        text = raw.decode("utf-8")  # strict: json.loads would also guess UTF-16 and UTF-32
    except UnicodeDecodeError as exc:
        raise TraceError(f"{what} is not UTF-8 text: {exc}") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_object_without_repeats)
    except ValueError as exc:  # JSONDecodeError, or an integer of over 4,300 digits
        raise TraceError(f"{what} is not valid JSON: {exc}") from None


def check_bounds(raw: bytes, what: str, max_depth: int, max_elements: int) -> None:
    """TraceTooLarge naming `what` when the JSON text `raw` nests deeper than max_depth or holds
    more than max_elements elements: what parse() refuses before parsing, and what save()
    refuses before writing a text that load() would not parse."""
    depth, elements = scan(raw)
    check_counts(depth, elements, what, max_depth, max_elements)


def check_counts(depth: int, elements: int, what: str, max_depth: int, max_elements: int) -> None:
    """TraceTooLarge naming `what` for a JSON text of this depth and element count over the
    limits: check_bounds' test, and what inspector/trace/file_meter.py says of a growing trace."""
    if depth > max_depth:
        raise TraceTooLarge(f"{what} nests {depth:,} levels deep, over the limit of {max_depth}")
    if elements > max_elements:
        raise TraceTooLarge(f"{what} holds {elements:,} elements, over the limit of {max_elements:,}")


def scan(raw: bytes) -> tuple[int, int]:
    """(deepest nesting, elements) of the JSON text `raw`, brackets and separators inside
    strings left out. Valid or not: a text json.loads would refuse still gets numbers."""
    data = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    depth = deepest = elements = 0
    in_string = False  # at the start of the chunk
    for start in range(0, len(data), CHUNK):
        chunk = _CLASSES[np.frombuffer(data, np.uint8, min(CHUNK, len(data) - start), start)]
        kinds = chunk[chunk != OTHER]  # usually a third of the bytes
        quotes = np.cumsum(kinds == QUOTE, dtype=np.int32)
        outside = (quotes & 1) == in_string  # even quote count since the chunk began, if it began outside
        kinds = kinds[outside]
        steps = (kinds == OPEN).astype(np.int32) - (kinds == CLOSE)
        levels = depth + np.cumsum(steps, dtype=np.int64)
        if levels.size:
            deepest, depth = max(deepest, int(levels.max())), int(levels[-1])
        elements += int(np.count_nonzero((kinds == OPEN) | (kinds == SEPARATOR)))
        in_string ^= bool(quotes[-1] & 1) if quotes.size else False
    return deepest, elements


def _object_without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refused (ValueError) when it names a key twice: JSON readers disagree on
    which value counts (Python's keeps the last, others the first), so the file would mean
    one thing here and another elsewhere."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        repeated = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise ValueError(f"the key {repeated[:60]!r} appears twice in one object")
    return obj


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")
