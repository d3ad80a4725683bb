"""Checks of the arguments the inspector's public calls take, made before the call changes anything.

Each returns the value (or its normalized form) or raises ArgumentError with a message that names
the argument, the rule and the value (its repr, cut short). Python's values need care: True is an
int to Python but no step, count or id; NaN passes every `x <= limit` check (each comparison with
it is False); a str is an iterable of its characters; a generator can be read only once.

The number rules are minillama's own (minillama/values.py: is_int, is_finite_real, MAX_COUNT, on
its face): the same values pass here as in the engine.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TypeVar

from inspector.trace.model import TraceError
from minillama import MAX_COUNT, MinillamaError, is_finite_real, is_int

MAX_SHOWN = 60  # characters of a refused value's repr in a message

T = TypeVar("T")


class ArgumentError(MinillamaError, ValueError):
    """A call to the inspector given an argument it cannot take: the wrong type, or out of range.
    Raised before anything changes (no engine step, no file written); a MinillamaError, so the
    command lines print it as one line."""


class NoSuchStep(ArgumentError, IndexError):
    """A step index past either end of the trace (an IndexError too, as a list's would be)."""


def shown(value: object) -> str:
    """`value`'s repr, cut to MAX_SHOWN characters: a message must stay one short line."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def whole(value: object, name: str, minimum: int = 0, maximum: int = MAX_COUNT) -> int:
    """An integer in [minimum, maximum]; 2.0, True and "2" are refused."""
    if not is_int(value) or value < minimum:
        raise ArgumentError(f"{name} must be an integer >= {minimum}, got {shown(value)}")
    if value > maximum:
        raise ArgumentError(f"{name} must be an integer <= {maximum:,}, got {shown(value)}")
    return value


def optional_whole(value: object, name: str, minimum: int = 0) -> int | None:
    """None, or an integer as `whole` takes it."""
    return None if value is None else whole(value, f"{name} (or None)", minimum)


def number(value: object, name: str, low: float, high: float = math.inf, open_low: bool = False,
           open_high: bool = False) -> float:
    """A finite int or float from low to high, either end excluded when asked; bools are refused."""
    above = is_finite_real(value) and (value > low if open_low else value >= low)
    if not (above and (value < high if open_high else value <= high)):
        if high == math.inf:
            rule = f"{'>' if open_low else '>='} {low:g}"
        else:
            rule = f"in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        raise ArgumentError(f"{name} must be a finite number {rule}, got {shown(value)}")
    return value


def flag(value: object, name: str) -> bool:
    """True or False: 0, 1, "yes" or None are refused, not read as truth values."""
    if not isinstance(value, bool):
        raise ArgumentError(f"{name} must be True or False, got {shown(value)}")
    return value


def instance(value: object, kind: type[T], name: str, optional: bool = False) -> T | None:
    """`value` when it is a `kind` (or None, with `optional`)."""
    if (value is None and optional) or isinstance(value, kind):
        return value
    wanted = f"of type {kind.__name__}" + (" or None" if optional else "")
    given = f"the class {value.__name__}" if isinstance(value, type) else shown(value)
    raise ArgumentError(f"{name} must be {wanted}, got {given}")


def items(value: object, name: str, what: str) -> list:
    """The items of a list, tuple or other iterable, in order, read once (a generator can be
    read only once). Refused with the remedy, as iterating them is no list of items: a str or
    bytes (its characters), a dict or other mapping (its keys), a set (its items, in an order
    that is no one's: a caller's results, such as add_batch's ids, follow the list's order)."""
    if isinstance(value, (str, bytes, bytearray)):
        raise ArgumentError(f"{name} must be a list of {what}, not one {type(value).__name__} ({shown(value)}): "
                            "put it in a list")
    if isinstance(value, Mapping):
        raise ArgumentError(f"{name} must be a list of {what}, not a {type(value).__name__} ({shown(value)}): "
                            "its keys would be read as the list; pass list(...) of its keys or values")
    if isinstance(value, (set, frozenset)):
        raise ArgumentError(f"{name} must be a list of {what}, not a {type(value).__name__} ({shown(value)}): "
                            "a set has no order; pass a list")
    if not isinstance(value, Iterable):
        raise ArgumentError(f"{name} must be a list of {what}, got {shown(value)}")
    return list(value)


def whole_tuple(value: object, name: str) -> tuple[int, ...]:
    """A tuple of distinct integers >= 0 from a list, tuple or other iterable of them, or from
    a set of them: the set's order is none, so it is sorted (a set of distinct numbers is what
    the caller means; items() refuses it only because it has no order)."""
    unordered = isinstance(value, (set, frozenset))
    listed = list(value) if unordered else items(value, name, "integers >= 0")
    numbers = tuple(whole(v, f"{name}[{i}]") for i, v in enumerate(listed))
    if unordered:
        return tuple(sorted(numbers))  # distinct already: a set holds each once
    repeated = [n for n, times in Counter(numbers).items() if times > 1]
    if repeated:
        raise ArgumentError(f"{name} holds {repeated[0]} more than once, got {shown(value)}")
    return numbers


def step_index(value: object, count: int, name: str = "index") -> int:
    """A step of a trace of `count` steps, negative counting from the end (as a list index),
    as an index from 0. NoSuchStep when it is past either end."""
    if not is_int(value):
        raise ArgumentError(f"{name} must be an integer (a step; negative counts from the end), got {shown(value)}")
    if not -count <= value < count:
        steps = "the trace has no step yet" if count == 0 else f"the trace has {count} step(s): {-count} to {count - 1}"
        raise NoSuchStep(f"{name} {shown(value)} is no step: {steps}")
    return value % count


def file_path(value: object, name: str = "path") -> Path:
    """A file system path: a str or an os.PathLike of one, without a NUL (which no file name
    holds). Bytes and open files are refused: the trace functions read and write by name."""
    raw = os.fspath(value) if isinstance(value, os.PathLike) else value
    if not isinstance(raw, str):
        raise ArgumentError(f"{name} must be a file path (a str or an os.PathLike), got {shown(value)}")
    if not raw or "\x00" in raw:
        raise ArgumentError(f"{name} must be a file path, got {shown(value)}: " +
                            ("it is empty" if not raw else "it holds a NUL character"))
    return Path(raw)


def output_file(value: object) -> Path:
    """A path a file can be written to: a regular file or none yet, in a folder that exists.
    ArgumentError when it is no path at all, TraceError (as save() always raised) when nothing
    can be written there. The writers replace the file whole (write beside it, then rename), so
    a device in its place would be replaced by a file, and a missing folder would fail only
    after the work."""
    path = file_path(value)
    try:
        return _writable(value, path)
    except OSError as exc:  # pathlib answers False for a missing path, but lets a name too long through
        raise TraceError(f"path {shown(str(path))}: {exc.strerror or exc}; not written") from exc


def _writable(value: object, path: Path) -> Path:
    if os.fspath(value).endswith(("/", os.sep)):  # Path drops the slash: "new/" would be a file "new"
        raise TraceError(f"path {shown(os.fspath(value))} names a folder; give a file name in it")
    if path.is_dir():
        raise TraceError(f"path {shown(str(path))} is not a regular file but a folder; give a file name in it")
    if path.exists() and not path.is_file():
        raise TraceError(f"path {shown(str(path))} is not a regular file (a device, a pipe or a socket); not written")
    if not path.parent.is_dir():
        raise TraceError(f"path {shown(str(path))}: there is no folder {shown(str(path.parent))}; not written")
    return path
