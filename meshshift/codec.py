"""Plain-JSON encoding of our frozen dataclasses, driven by their type hints.

The rollout state, analysis runs and API payloads are trees of frozen dataclasses;
this turns them into JSON-ready dicts (camelCase keys, as Kubernetes users expect)
and back, without a hand-written to_dict/from_dict per class.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, Union, get_args, get_origin

T = TypeVar("T")

# A union of dataclasses is written with a tag naming the class, e.g. {"kind": "SetWeight", ...}.
UNION_TAG = "kind"


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


@functools.cache
def _fields(cls: type) -> tuple[tuple[str, str, Any], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((f.name, camel(f.name), hints[f.name]) for f in dataclasses.fields(cls))


def encode(value: Any, hint: Any = None) -> Any:
    """A JSON-ready value: dataclasses become dicts, tuples lists, enums their values.

    `hint` is the declared type; where it is a union of several dataclasses, the value
    carries its class name under UNION_TAG so decode() knows which one to build.
    """
    return _encoder(hint)(value)


# What encode() does with a value depends on its class only: which of these it is.
_PLAIN, _FLOAT, _ENUM, _DATACLASS, _MAPPING, _SEQUENCE, _UNKNOWN = range(7)
_Encoder = Callable[[Any], Any]


@functools.cache
def _kind(cls: type) -> int:
    if cls is type(None) or issubclass(cls, bool | int | str):
        return _PLAIN
    if issubclass(cls, float):
        return _FLOAT
    if issubclass(cls, enum.Enum):
        return _ENUM
    if dataclasses.is_dataclass(cls):
        return _DATACLASS
    if issubclass(cls, Mapping):
        return _MAPPING
    if issubclass(cls, list | tuple):
        return _SEQUENCE
    return _UNKNOWN


@functools.cache
def _field_encoders(cls: type) -> tuple[tuple[str, str, _Encoder], ...]:
    return tuple((name, key, _encoder(hint)) for name, key, hint in _fields(cls))


def _encoder(hint: Any) -> _Encoder:
    """encode() for values declared as `hint`, with what the hint decides worked out once.

    The rollout state is encoded on every state write: at a thousand rollouts, looking the
    hints up again for every field was a sixth of the daemon's CPU.
    """
    try:
        return _cached_encoder(hint)
    except TypeError:  # an unhashable hint: worked out each time
        return _make_encoder(hint)


@functools.cache
def _cached_encoder(hint: Any) -> _Encoder:
    return _make_encoder(hint)


def _make_encoder(hint: Any) -> _Encoder:
    tagged = _is_tagged_union(hint)
    item_hint = _item_hint(hint)

    def encode_value(value: Any) -> Any:
        cls: type = type(value)
        kind = _kind(cls)
        if kind == _PLAIN:
            return value
        if kind == _FLOAT:
            # JSON has no NaN/Inf; keep them readable and reversible.
            return value if math.isfinite(value) else repr(value)
        if kind == _ENUM:
            return value.value
        if kind == _DATACLASS:
            body = {UNION_TAG: cls.__name__} if tagged else {}
            for name, key, field in _field_encoders(cls):
                item = getattr(value, name)
                item_cls = type(item)
                # Most fields are plain: written here without a call.
                body[key] = item if item_cls is str or item_cls is int or item is None else field(item)
            return body
        if kind == _MAPPING:
            items = _encoder(item_hint)
            return {str(k): items(v) for k, v in value.items()}
        if kind == _SEQUENCE:
            items = _encoder(item_hint)
            return [items(v) for v in value]
        raise TypeError(f"cannot encode {cls.__name__}")

    return encode_value


def _is_tagged_union(hint: Any) -> bool:
    if get_origin(hint) not in (Union, types.UnionType):
        return False
    members = [m for m in get_args(hint) if m is not type(None)]
    return len(members) > 1 and all(dataclasses.is_dataclass(m) for m in members)


def _item_hint(hint: Any) -> Any:
    """The element type of tuple[X, ...], list[X] or Mapping[str, X]; None if unknown."""
    args = get_args(hint)
    if get_origin(hint) in (tuple, list) and args:
        return args[0]
    if get_origin(hint) in (dict, Mapping) and len(args) == 2:
        return args[1]
    return None


def decode(cls: type[T], data: Any) -> T:
    """Rebuild a value of type `cls` from what encode() produced."""
    return typing.cast(T, _decode(cls, data))


def _decode(hint: Any, data: Any) -> Any:
    origin = get_origin(hint)
    if hint is Any:
        return data
    if origin in (Union, types.UnionType):
        return _decode_union(get_args(hint), data)
    if origin is typing.Literal:
        if data not in get_args(hint):
            raise ValueError(f"{data!r} is not one of {get_args(hint)}")
        return data
    if origin is tuple:
        args = get_args(hint)
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        if item is None:
            return tuple(_decode(a, d) for a, d in zip(args, data, strict=True))
        return tuple(_decode(item, d) for d in data)
    if origin is list:
        return [_decode(get_args(hint)[0], d) for d in data]
    if origin in (dict, Mapping, typing.Mapping) or hint in (dict, Mapping):
        args = get_args(hint)
        value_hint = args[1] if args else Any
        return {k: _decode(value_hint, v) for k, v in data.items()}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(data)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _decode_dataclass(hint, data)
    if hint is float:
        if isinstance(data, str):
            return float(data)  # "nan", "inf" from encode()
        return float(data)
    if hint in (int, str, bool):
        if not isinstance(data, hint) or (hint is int and isinstance(data, bool)):
            raise ValueError(f"expected {hint.__name__}, got {data!r}")
        return data
    if hint is type(None):
        if data is not None:
            raise ValueError(f"expected null, got {data!r}")
        return None
    raise TypeError(f"cannot decode into {hint!r}")


def _decode_union(members: tuple[Any, ...], data: Any) -> Any:
    if data is None and type(None) in members:
        return None
    non_null = [m for m in members if m is not type(None)]
    if len(non_null) == 1:
        return _decode(non_null[0], data)
    if isinstance(data, Mapping) and UNION_TAG in data:
        for member in non_null:
            if isinstance(member, type) and member.__name__ == data[UNION_TAG]:
                body = {k: v for k, v in data.items() if k != UNION_TAG}
                return _decode(member, body)
        raise ValueError(f"unknown {UNION_TAG} {data[UNION_TAG]!r}")
    for member in non_null:  # plain unions such as float | str
        try:
            return _decode(member, data)
        except (TypeError, ValueError):
            continue
    raise ValueError(f"{data!r} matches none of {members}")


def _decode_dataclass(cls: type, data: Any) -> Any:
    if not isinstance(data, Mapping):
        raise ValueError(f"expected an object for {cls.__name__}, got {data!r}")
    kwargs = {}
    for name, key, hint in _fields(cls):
        if key in data:
            kwargs[name] = _decode(hint, data[key])
    return cls(**kwargs)
