"""Dataclasses <-> JSON, with tensors set aside by name.

encode() turns a tree of dataclasses, lists, dicts and scalars into JSON values; each tensor it
meets is moved to a flat {name: tensor} dict under its path in the tree ("steps.3.kv.fill") and
replaced by {"tensor": that path}.

decode() walks the same tree back, guided by the type hints (trace.py's schema), and checks
every value on the way: its JSON type, a Literal's allowed values, a Range's bounds
(inspector/trace/bounds.py) or a text's MaxLength, that a float is finite, an integer fits 64 bits, and a text is valid
Unicode (JSON's "\\ud800" escapes can make a lone surrogate, which no UTF-8 page can carry);
an object must have exactly the schema's fields. A trace file is input from outside, so the
first wrong value is reported with its path ("trace.steps.3.index: expected an integer, got
bool"), never trusted. No pickle anywhere.

Speed: a long trace holds millions of values. Each type hint gets its decoder function once
(cached), so a value costs no dispatch on its type; a list of numbers or texts is checked with
a few passes in C (map, min, max) instead of a call per element; and a value's path is only
assembled when something is wrong: the mismatch raises _Mismatch, and each enclosing container
adds its key as the exception passes through (try costs nothing in Python 3.11 until it fires).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

import torch

from inspector.trace.bounds import MaxLength, Range
from inspector.trace.model import TraceError

JSON = Any  # dict, list, str, int, float, bool or None
INT64_LOW, INT64_HIGH = -(2**63), 2**63 - 1
INT64 = Range(INT64_LOW, INT64_HIGH)
_SURROGATE = re.compile("[\ud800-\udfff]")


# What json.dumps writes as they are: encode() returns them unchanged.
_SCALARS = frozenset({int, float, str, bool, type(None)})


def encode(value: Any, tensors: dict[str, torch.Tensor], path: str) -> JSON:
    """`value` as JSON values; each tensor goes into `tensors` under its path, as it is (no copy:
    stored_tensor makes the file's copy, and the file meter only counts its bytes)."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is list and all(map(_SCALARS.__contains__, map(type, value))):
        return list(value)  # token ids, texts: a copy in C (the recorder may append meanwhile)
    names = _field_names(kind)
    if names is not None:
        return {name: encode(getattr(value, name), tensors, f"{path}.{name}") for name in names}
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach()
        return {"tensor": path}
    if isinstance(value, (list, tuple)):
        return [encode(v, tensors, f"{path}.{i}") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): encode(v, tensors, f"{path}.{k}") for k, v in value.items()}
    return value


@functools.cache
def _field_names(kind: type) -> tuple[str, ...] | None:
    """A dataclass's field names, in order (encode() asks once per class); None for any other type."""
    return tuple(f.name for f in dataclasses.fields(kind)) if dataclasses.is_dataclass(kind) else None


def stored_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """What the file holds of an encoded tensor: its values alone, on the CPU, contiguous."""
    stored = tensor.to("cpu").contiguous()
    if stored.untyped_storage().nbytes() > stored.nbytes:
        stored = stored.clone()  # a view into a larger buffer: keep only what it shows
    return stored


def decode(kind: Any, data: JSON, tensors: Mapping[str, torch.Tensor], path: str, used: set[str] | None = None) -> Any:
    """Rebuild a value of type `kind` (a type hint) from JSON; raise TraceError naming the path
    of the first bad value. The names of the tensors it references (each at most once) are added
    to `used`."""
    refs = _Refs(tensors, used if used is not None else set())
    try:
        return _decoder(kind)(data, refs)
    except _Mismatch as exc:
        raise TraceError(f"{'.'.join([path, *reversed(exc.keys)])}: {exc}") from None


@dataclasses.dataclass
class _Refs:
    tensors: Mapping[str, torch.Tensor]  # what {"tensor": name} may name
    used: set[str]  # the names referenced so far


class _Mismatch(Exception):
    """A value that does not fit its type; `keys` is its path, innermost key first."""

    def __init__(self, message: str):
        super().__init__(message)
        self.keys: list[str] = []


Decoder = Callable[[JSON, _Refs], Any]


@functools.cache
def _decoder(kind: Any) -> Decoder:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Annotated:
        (bound,) = [m for m in kind.__metadata__ if isinstance(m, (Range, MaxLength))]
        return _short_text(bound.high) if isinstance(bound, MaxLength) else _bounded(args[0], bound)
    if origin is typing.Literal:
        return _literal(args)
    if origin in (typing.Union, types.UnionType):
        return _union(args)
    if dataclasses.is_dataclass(kind) or typing.is_typeddict(kind):
        return _record(kind)
    if origin is list:
        return _list(args[0])
    if origin is dict:
        return _dict(*args)
    if kind is torch.Tensor:
        return _tensor
    if kind in _SCALARS:
        return _SCALARS[kind]
    raise TypeError(f"the codec does not handle {kind!r}")  # a schema bug, not bad input


# -- scalars: each check returns the value to keep, or raises _Mismatch. Each is its own decoder
# (refs unused), so a scalar field costs one call, not a wrapper's call and then the check's.


def _int(data: JSON, refs: _Refs | None = None) -> int:
    if type(data) is not int:
        raise _Mismatch(_expected("an integer", data))
    if not INT64_LOW <= data <= INT64_HIGH:
        raise _Mismatch(f"expected a 64-bit integer, got {_show(data)}")
    return data


def _float(data: JSON, refs: _Refs | None = None) -> float:
    if type(data) not in (int, float):
        raise _Mismatch(_expected("a number", data))
    try:
        value = float(data)
    except OverflowError:  # an integer of hundreds of digits
        value = math.inf
    if not math.isfinite(value):
        raise _Mismatch(f"expected a finite number, got {_show(data)}")
    return value


def _str(data: JSON, refs: _Refs | None = None) -> str:
    if type(data) is not str:
        raise _Mismatch(_expected("a str", data))
    if not data.isascii() and _SURROGATE.search(data):
        raise _Mismatch("expected text, got a lone UTF-16 surrogate (not Unicode)")
    return data


def _bool(data: JSON, refs: _Refs | None = None) -> bool:
    if type(data) is not bool:
        raise _Mismatch(_expected("a bool", data))
    return data


_SCALARS: dict[type, Decoder] = {int: _int, float: _float, str: _str, bool: _bool}


def _bounded(kind: type, bound: Range) -> Decoder:
    check = _SCALARS[kind]
    low, high = _limits(bound)

    def decode(data: JSON, refs: _Refs) -> Any:
        value = check(data)
        if not low <= value <= high:
            raise _Mismatch(f"expected a number {bound.describe()}, got {_show(value)}")
        return value

    return decode


def _short_text(high: int) -> Decoder:
    def decode(data: JSON, refs: _Refs) -> str:
        if type(data) is not str or len(data) > high or not (data.isascii() or not _SURROGATE.search(data)):
            _str(data)  # says what is wrong with it as a text, if anything
            raise _Mismatch(f"expected a text of at most {high:,} characters, got {len(data):,}")
        return data

    return decode


def _limits(*bounds: Range) -> tuple[float, float]:
    """The narrowest [low, high] that all `bounds` allow (infinities where none bounds a side):
    two comparisons a value, not a Range.holds call for each bound."""
    low = max((b.low for b in bounds if b.low is not None), default=-math.inf)
    high = min((b.high for b in bounds if b.high is not None), default=math.inf)
    return low, high


def _literal(allowed: tuple[str, ...]) -> Decoder:
    values = frozenset(allowed)

    def decode(data: JSON, refs: _Refs) -> str:
        if type(data) is str and data in values:
            return data
        raise _Mismatch(f"expected one of {', '.join(map(repr, allowed))}, got {_show(data)}")

    return decode


def _union(args: tuple[Any, ...]) -> Decoder:
    """"X | None", or alternatives of distinct JSON types (bool | Literal["never"]): the value is
    the first that fits."""
    nullable = type(None) in args
    decoders = [_decoder(a) for a in args if a is not type(None)]
    if len(decoders) == 1:  # "X | None": X's mismatch, with its path, is the one to report
        (decode_inner,) = decoders
        return lambda data, refs: None if data is None else decode_inner(data, refs)

    def decode(data: JSON, refs: _Refs) -> Any:
        if data is None and nullable:
            return None
        problems = []
        for decode_one in decoders:
            try:
                return decode_one(data, refs)
            except _Mismatch as exc:
                problems.append(str(exc))
        raise _Mismatch(" or ".join(problems))

    return decode


# -- containers -------------------------------------------------------------------------------


def _record(cls: type) -> Decoder:
    """A dataclass, or a TypedDict (decoded to a dict): an object with exactly its fields."""
    hints = typing.get_type_hints(cls, include_extras=True)
    if dataclasses.is_dataclass(cls):
        missing = dataclasses.MISSING
        fields = [(f.name, f.default is missing and f.default_factory is missing) for f in dataclasses.fields(cls)]
        build: Callable[..., Any] = cls
    else:
        fields = [(name, name in cls.__required_keys__) for name in hints]
        build = dict
    # An optional field ("X | None") is decoded by X's decoder, its None taken here: most of a
    # trace's optional fields are None, and each would cost a call to say so.
    decoders = [(name, _decoder(_optional(hints[name]) or hints[name]), required, _optional(hints[name]) is not None)
                for name, required in fields]
    known = {name for name, _ in fields}

    def decode(data: JSON, refs: _Refs) -> Any:
        if type(data) is not dict:
            raise _Mismatch(_expected(f"an object ({cls.__name__})", data))
        values = {}
        for name, decode_field, required, optional in decoders:
            if name in data:
                value = data[name]
                if value is None and optional:
                    values[name] = None
                    continue
                try:
                    values[name] = decode_field(value, refs)
                except _Mismatch as exc:
                    exc.keys.append(name)
                    raise
            elif required:
                raise _Mismatch(f"missing field {name!r}")
        if len(values) != len(data):
            unknown = next(key for key in data if key not in known)
            raise _Mismatch(f"unexpected field {_show(unknown)} in {cls.__name__}")
        return build(**values)

    return decode


def _optional(kind: Any) -> Any:
    """X for a hint "X | None" (one type besides None), else None."""
    if typing.get_origin(kind) not in (typing.Union, types.UnionType) or type(None) not in typing.get_args(kind):
        return None
    others = [a for a in typing.get_args(kind) if a is not type(None)]
    return others[0] if len(others) == 1 else None


def _list(item: Any) -> Decoder:
    decode_item = _decoder(item)
    fast = _fast_list(item)

    def decode(data: JSON, refs: _Refs) -> list:
        if type(data) is not list:
            raise _Mismatch(_expected("a list", data))
        if fast is not None:
            values = fast(data)
            if values is not None:
                return values
        result = []  # one call per element, and on a mismatch its index in the path
        for i, value in enumerate(data):
            try:
                result.append(decode_item(value, refs))
            except _Mismatch as exc:
                exc.keys.append(str(i))
                raise
        return result

    return decode


def _fast_list(item: Any) -> Callable[[list], list | None] | None:
    """For a list of numbers or texts: a check of the whole list in a few C-level passes,
    returning the decoded list, or None when some element is wrong (the caller then decodes
    element by element to say which). None for other item types."""
    kind, bound, longest = item, INT64, None
    if typing.get_origin(item) is typing.Annotated:
        kind, (bound,) = typing.get_args(item)[0], [m for m in item.__metadata__ if isinstance(m, (Range, MaxLength))]
        if isinstance(bound, MaxLength):
            bound, longest = INT64, bound.high
    if kind is int:
        low, high = _limits(INT64, bound)

        def check(data: list) -> list | None:
            if not set(map(type, data)) <= {int}:
                return None
            return data if not data or low <= min(data) and max(data) <= high else None
    elif kind is float:
        low, high = _limits(bound)

        def check(data: list) -> list | None:
            if not set(map(type, data)) <= {int, float}:
                return None
            try:
                values = list(map(float, data))
            except OverflowError:
                return None
            ok = all(map(math.isfinite, values)) and (not values or low <= min(values) and max(values) <= high)
            return values if ok else None
    elif kind is str:
        def check(data: list) -> list | None:
            ok = set(map(type, data)) <= {str} and all(s.isascii() or not _SURROGATE.search(s) for s in data)
            return data if ok and (longest is None or max(map(len, data), default=0) <= longest) else None
    else:
        return None
    return check


def _dict(key: type, value: Any) -> Decoder:
    decode_key = _int_key if key is int else _str
    decode_value = _decoder(value)

    def decode(data: JSON, refs: _Refs) -> dict:
        if type(data) is not dict:
            raise _Mismatch(_expected("an object", data))
        result = {}
        for k, v in data.items():
            try:
                decoded_key = decode_key(k)
                result[decoded_key] = decode_value(v, refs)
            except _Mismatch as exc:
                exc.keys.append(_path_key(k))
                raise
        return result

    return decode


def _path_key(key: str) -> str:
    """A key from the file as a step of an error's path: itself when short and printable, else
    _show's clipped repr (a key may be megabytes long, or drive a terminal with escapes)."""
    return key if len(key) <= 40 and key.isprintable() else _show(key)


def _int_key(key: str) -> int:
    """An integer key, written the one way str() writes it (so "7" and "07" cannot both be 7)."""
    try:
        number = int(key)
    except ValueError:
        number = None
    if number is None or str(number) != key:
        raise _Mismatch(f"key {_show(key)} is not an integer")
    return number


def _tensor(data: JSON, refs: _Refs) -> torch.Tensor:
    if type(data) is not dict or data.keys() != {"tensor"} or type(data["tensor"]) is not str:
        raise _Mismatch(_expected("a tensor reference", data))
    name = data["tensor"]
    if name not in refs.tensors:
        raise _Mismatch(f"tensor {_show(name)} is missing from tensors.safetensors")
    if name in refs.used:  # encode() names each by its one path; shared, a small file could stand for a large one
        raise _Mismatch(f"tensor {_show(name)} is referenced a second time")
    refs.used.add(name)
    return refs.tensors[name]


def _expected(what: str, data: JSON) -> str:
    return f"expected {what}, got {type(data).__name__}"


def _show(value: JSON, limit: int = 40) -> str:
    """A value for a message: short (it comes from the file, and may be huge)."""
    if not isinstance(value, (str, int, float, bool)) and value is not None:
        return type(value).__name__
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
