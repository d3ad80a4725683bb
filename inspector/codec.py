"""Dataclasses <-> JSON, with tensors set aside by name.

encode() turns a tree of dataclasses, lists, dicts and scalars into JSON values; each tensor it
meets is moved into a `tensors` dict under its path in the tree ("steps.3.kv.fill") and replaced
by {"tensor": that path}. decode() walks the same tree back, guided by the dataclasses' type
hints, and checks every value's type on the way: a trace file is input from outside, so a wrong
type is reported with its path, never trusted. No pickle anywhere.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any

import torch

from inspector.trace import TraceError

JSON = Any  # dict, list, str, int, float, bool or None


def encode(value: Any, tensors: dict[str, torch.Tensor], path: str) -> JSON:
    if dataclasses.is_dataclass(value):
        return {f.name: encode(getattr(value, f.name), tensors, f"{path}.{f.name}") for f in dataclasses.fields(value)}
    if isinstance(value, torch.Tensor):
        tensor = value.detach().to("cpu").contiguous()
        if tensor.untyped_storage().nbytes() > tensor.nbytes:
            tensor = tensor.clone()  # a view into a larger buffer: keep only what it shows
        tensors[path] = tensor
        return {"tensor": path}
    if isinstance(value, (list, tuple)):
        return [encode(v, tensors, f"{path}.{i}") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): encode(v, tensors, f"{path}.{k}") for k, v in value.items()}
    return value


def decode(kind: Any, data: JSON, tensors: dict[str, torch.Tensor], path: str) -> Any:
    """Rebuild a value of type `kind` (a type hint) from JSON; raise TraceError on a mismatch."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return data
    if origin in (typing.Union, types.UnionType):  # X | None
        if data is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return decode(inner, data, tensors, path)
    if dataclasses.is_dataclass(kind):
        return _decode_dataclass(kind, data, tensors, path)
    if origin is list:
        _expect(isinstance(data, list), path, "a list", data)
        return [decode(args[0], v, tensors, f"{path}.{i}") for i, v in enumerate(data)]
    if origin is dict:
        _expect(isinstance(data, dict), path, "an object", data)
        key_type, value_type = args
        return {_decode_key(key_type, k, path): decode(value_type, v, tensors, f"{path}.{k}") for k, v in data.items()}
    if kind is torch.Tensor:
        _expect(isinstance(data, dict) and set(data) == {"tensor"}, path, "a tensor reference", data)
        if data["tensor"] not in tensors:
            raise TraceError(f"{path}: tensor {data['tensor']!r} is missing from tensors.safetensors")
        return tensors[data["tensor"]]
    if kind is float:
        _expect(isinstance(data, (int, float)) and not isinstance(data, bool), path, "a number", data)
        return float(data)
    if kind is int:
        _expect(isinstance(data, int) and not isinstance(data, bool), path, "an integer", data)
        return data
    if kind in (str, bool):
        _expect(isinstance(data, kind), path, f"a {kind.__name__}", data)
        return data
    raise TypeError(f"{path}: the codec does not handle {kind!r}")  # a schema bug, not bad input


def _decode_dataclass(cls: type, data: JSON, tensors: dict[str, torch.Tensor], path: str) -> Any:
    _expect(isinstance(data, dict), path, f"an object ({cls.__name__})", data)
    hints = _type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            values[f.name] = decode(hints[f.name], data[f.name], tensors, f"{path}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise TraceError(f"{path}: missing field {f.name!r}")
    return cls(**values)


def _decode_key(kind: type, key: str, path: str) -> Any:
    if kind is int:
        try:
            return int(key)
        except ValueError:
            raise TraceError(f"{path}: key {key!r} is not an integer") from None
    return key


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _expect(ok: bool, path: str, what: str, data: JSON) -> None:
    if not ok:
        raise TraceError(f"{path}: expected {what}, got {type(data).__name__}")
