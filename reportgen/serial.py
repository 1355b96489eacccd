"""Records to JSON-able data and back, driven by their type hints.

The cache stores :class:`~reportgen.records.PhotoRecord` and
:class:`~reportgen.records.ModelEntry` through these two functions, so a new field needs no
serialisation code. Types understood: ``int``, ``float``, ``str``, ``bool``, ``X | None``,
``tuple[X, ...]``, fixed tuples ``tuple[X, Y]``, and nested frozen dataclasses. Loading checks every
value's type, so a damaged or stale entry raises :class:`ValueError` instead of being half used.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from .records import stored_fields

T = TypeVar("T")
Loader = Callable[[Any], Any]


def dump(record: Any) -> dict[str, Any]:
    """The stored fields of a dataclass record as plain JSON-able values."""
    return {f.name: _dump_value(getattr(record, f.name)) for f in stored_fields(type(record))}


def _dump_value(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dump(value)
    if isinstance(value, tuple):
        return [_dump_value(v) for v in value]
    return value


def load(cls: type[T], data: Any) -> T:
    """A ``cls`` record from what :func:`dump` made of one.

    Raises:
        ValueError: a field is missing, extra, or of the wrong type.
    """
    return _loader(cls)(data)


@functools.cache
def _loader(tp: Any) -> Loader:
    """A function that checks and converts data of type ``tp`` (built once per type)."""
    if dataclasses.is_dataclass(tp):
        return _record_loader(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = (a for a in args if a is not type(None))
        load_inner = _loader(inner)
        return lambda v: None if v is None else load_inner(v)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        item = _loader(args[0])
        return lambda v: tuple(item(x) for x in _list(v))
    if origin is tuple:
        items = [_loader(a) for a in args]
        return lambda v: tuple(f(x) for f, x in zip(items, _list(v, len(items)), strict=True))
    if tp in (int, str, bool):
        return functools.partial(_exact, tp)
    if tp is float:
        return _float
    raise TypeError(f"cannot store values of type {tp!r}")


def _record_loader(cls: type) -> Loader:
    hints = typing.get_type_hints(cls)
    fields = {f.name: _loader(hints[f.name]) for f in stored_fields(cls)}

    def load_record(data: Any) -> Any:
        if not isinstance(data, dict) or data.keys() != fields.keys():
            raise ValueError(f"{cls.__name__}: expected the fields {sorted(fields)}")
        return cls(**{name: convert(data[name]) for name, convert in fields.items()})

    return load_record


def _list(value: Any, length: int | None = None) -> list[Any]:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        raise ValueError(f"expected a list{f' of {length}' if length else ''}, got {value!r:.40}")
    return value


def _exact(tp: type, value: Any) -> Any:
    # bool is an int to Python, not to a record.
    if type(value) is not tp:
        raise ValueError(f"expected {tp.__name__}, got {value!r:.40}")
    return value


def _float(value: Any) -> float:
    if type(value) not in (float, int):
        raise ValueError(f"expected a number, got {value!r:.40}")
    return float(value)
