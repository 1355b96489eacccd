"""Records to JSON-able data and back, driven by their type hints.

The cache stores :class:`~reportgen.records.PhotoRecord` and
:class:`~reportgen.records.ModelEntry` through these two functions, so a new field needs no
serialisation code. Types understood: ``int``, ``float``, ``str``, ``bool``, ``X | None``,
``tuple[X, ...]``, fixed tuples ``tuple[X, Y]``, nested frozen dataclasses, and
:data:`~reportgen.records.Floats` vectors (stored as base64 of their little-endian float64 bytes:
exact, and read back at C speed, where a JSON list of 64 numbers costs 64 float parses). Loading
checks every value's type, so a damaged or stale entry raises :class:`ValueError` instead of being
half used.
"""

from __future__ import annotations

import array
import base64
import binascii
import dataclasses
import functools
import sys
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from .records import stored_fields

T = TypeVar("T")
Loader = Callable[[Any], Any]


def dump(record: Any) -> dict[str, Any]:
    """The stored fields of a dataclass record as plain JSON-able values: a dict by field name
    (records inside it are lists of their fields' values, in order: compact, and read back at a
    fraction of a dict's cost, which counts with five predictions a photo)."""
    return {f.name: _dump_value(getattr(record, f.name)) for f in stored_fields(type(record))}


def _dump_value(value: Any) -> Any:
    if isinstance(value, array.array):
        return _dump_floats(value)
    if dataclasses.is_dataclass(value):
        return [_dump_value(getattr(value, f.name)) for f in stored_fields(type(value))]
    if isinstance(value, tuple):
        return [_dump_value(v) for v in value]
    return value


def load(cls: type[T], data: Any) -> T:
    """A ``cls`` record from what :func:`dump` made of one.

    Raises:
        ValueError: a field is missing, extra, or of the wrong type.
    """
    return _record_loader(cls)(data)


@functools.cache
def _loader(tp: Any) -> Loader:
    """A function that checks and converts data of type ``tp`` (built once per type)."""
    if dataclasses.is_dataclass(tp):
        return _row_loader(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = (a for a in args if a is not type(None))
        load_inner = _loader(inner)
        return lambda v: None if v is None else load_inner(v)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        item = _loader(args[0])
        return lambda v: tuple([item(x) for x in _list(v)])
    if origin is tuple:
        items = [_loader(a) for a in args]
        return lambda v: tuple(f(x) for f, x in zip(items, _list(v, len(items)), strict=True))
    if tp is array.array:
        return _load_floats
    if tp in (int, str, bool):
        return _exact(tp)
    if tp is float:
        return _float
    raise TypeError(f"cannot store values of type {tp!r}")


@functools.cache
def _record_loader(cls: type) -> Loader:
    """Loads a record stored as a dict by field name."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: _loader(hints[f.name]) for f in stored_fields(cls)}
    make = _maker(cls)

    def load_record(data: Any) -> Any:
        if not isinstance(data, dict) or data.keys() != fields.keys():
            raise ValueError(f"{cls.__name__}: expected the fields {sorted(fields)}")
        return make({name: convert(data[name]) for name, convert in fields.items()})

    return load_record


def _row_loader(cls: type) -> Loader:
    """Loads a record stored as a list of its fields' values, in order."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in stored_fields(cls)]
    flat = _flat_row_loader(cls, names, [hints[name] for name in names])
    if flat is not None:
        return flat
    converters = [_loader(hints[name]) for name in names]
    make = _maker(cls)

    def load_row(data: Any) -> Any:
        values = _list(data, len(names))
        return make({n: f(v) for n, f, v in zip(names, converters, values, strict=True)})

    return load_row


_CHECKS = {
    int: "type({v}) is int",
    str: "type({v}) is str",
    bool: "type({v}) is bool",
    float: "type({v}) in (float, int)",
}


def _flat_row_loader(cls: type, names: list[str], types_: list[Any]) -> Loader | None:
    """For a record of plain values only (a prediction, a layer's range: five or more a photo),
    a loader written out as one function, as dataclasses writes ``__init__``: the generic one
    calls a converter a value, and these rows were half of loading a photo's record.

    Their strings are interned: a label or a layer's name is then held once however many
    records name it (JSON makes a new string of each)."""
    if not all(tp in _CHECKS for tp in types_):
        return None
    values = [f"v{i}" for i in range(len(names))]
    checks = " and ".join(_CHECKS[tp].format(v=v) for tp, v in zip(types_, values, strict=True))
    converted = {
        name: f"float({v})" if tp is float else f"intern({v})" if tp is str else v
        for name, tp, v in zip(names, types_, values, strict=True)
    }
    local = _local_defaults(cls)
    if _slotted(cls):
        filled = {**{name: f"local[{name!r}]" for name in local}, **converted}
        fill = "\n    ".join(f"set_{name}(record, {v})" for name, v in filled.items())
    else:
        fields = ", ".join(f"{name!r}: {v}" for name, v in converted.items())
        fill = f"record.__dict__.update(local)\n    record.__dict__.update({{{fields}}})"
    source = f"""
def load_row(data):
    if type(data) is not list or len(data) != {len(names)}:
        raise ValueError(f"expected a list of {len(names)}, got {{data!r:.40}}")
    {", ".join(values)}, = data
    if not ({checks}):
        raise ValueError(f"{cls.__name__}: wrong types in {{data!r:.60}}")
    record = new(cls)
    {fill}
    return record
"""
    namespace: dict[str, Any] = {
        "new": object.__new__,
        "cls": cls,
        "local": local,
        "intern": sys.intern,
        **{f"set_{name}": _slot_setter(cls, name) for name in [*local, *names] if _slotted(cls)},
    }
    exec(source, namespace)  # noqa: S102 (our own source, from the record's type hints)
    return namespace["load_row"]


def _slotted(cls: type) -> bool:
    """Whether ``cls`` keeps its fields in slots (no instance dict)."""
    return "__slots__" in cls.__dict__


def _slot_setter(cls: type, name: str) -> Callable[[Any, Any], None]:
    """Sets field ``name`` of a slotted ``cls`` directly, as a frozen dataclass's __init__ does
    past its own __setattr__ (which refuses)."""
    return cls.__dict__[name].__set__


def _local_defaults(cls: type) -> dict[str, Any]:
    """The defaults of the fields of ``cls`` that the cache does not keep."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f not in stored_fields(cls)}


def _maker(cls: type) -> Callable[[dict[str, Any]], Any]:
    """Makes a ``cls`` from checked and converted values of its stored fields, directly: a frozen
    dataclass's __init__ costs an object.__setattr__ call a field, a third of the load."""
    if _slotted(cls):
        # Through its own __init__, which gives the fields the cache does not keep their
        # defaults. The slotted records held by the thousand (predictions, layer ranges) are
        # rows of plain values, which _flat_row_loader makes faster.
        return lambda values: cls(**values)
    local = _local_defaults(cls)

    def make(values: dict[str, Any]) -> Any:
        record = object.__new__(cls)
        record.__dict__.update(local)
        record.__dict__.update(values)
        return record

    return make


def _list(value: Any, length: int | None = None) -> list[Any]:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        raise ValueError(f"expected a list{f' of {length}' if length else ''}, got {value!r:.40}")
    return value


def _exact(tp: type) -> Loader:
    def load_exact(value: Any) -> Any:
        # bool is an int to Python, not to a record.
        if type(value) is not tp:
            raise ValueError(f"expected {tp.__name__}, got {value!r:.40}")
        return value

    return load_exact


def _float(value: Any) -> float:
    if type(value) not in (float, int):
        raise ValueError(f"expected a number, got {value!r:.40}")
    return float(value)


def _dump_floats(vector: array.array) -> str:
    little = array.array("d", vector)
    if sys.byteorder == "big":
        little.byteswap()
    return base64.b64encode(little.tobytes()).decode("ascii")


def _load_floats(value: Any) -> array.array:
    if not isinstance(value, str):
        raise ValueError(f"expected base64 float64 numbers, got {value!r:.40}")
    try:
        # base64.b64decode(value, validate=True) without its wrapper: two vectors a photo.
        data = binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"expected base64 float64 numbers, got {value!r:.40}") from None
    if len(data) % 8:
        raise ValueError(f"expected whole float64 numbers, got {len(data)} bytes")
    vector = array.array("d", data)
    if sys.byteorder == "big":
        vector.byteswap()
    return vector
