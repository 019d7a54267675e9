"""Typed parameters and results of actions: what a surface may send, what it gets back.

Each action names a `Params` dataclass — the fields a surface may send, typed as
they may arrive (a button sends a review id as text, the console as a number) —
and returns a `Data` dataclass. The gate parses a surface's mapping into the
action's Params before `prepare`: an unknown field or a value of the wrong type
is an audited `invalid`, never a guess. The classes are the schema: the coming
WhatsApp command surface and HTTP API list, parse and serialise every action's
fields from them (`Params.spec`, `Params.parse`, `as_dict`).

Field names are Python names; a field whose name on the wire is not one (`for`,
`2fa`, `from`) says so with `wire("for")` (a Params field) or
`field(metadata=wire_name("for"))` (a Data field).
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Iterator, KeysView, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import date, datetime
from enum import Enum
from functools import cache
from typing import Any, Self, Union, get_args, get_origin, get_type_hints

from ..errors import InvalidInput


class UnexpectedParam(InvalidInput):
    code = "unexpected_param"


class WrongParamType(InvalidInput):
    code = "wrong_param_type"


def wire(name: str) -> Any:
    """A Params field named `name` on the wire (a word Python reserves, like `for`)."""
    return field(default=None, metadata=wire_name(name))


def wire_name(name: str) -> dict[str, str]:
    """Metadata naming a Data field on the wire: `for_: str = field(metadata=wire_name("for"))`."""
    return {"wire": name}


@dataclass(frozen=True)
class FieldSpec:
    """One field of an action's params: its names, and the types it may arrive as."""

    attr: str
    name: str
    types: tuple[type, ...]
    """Python types a value may have; `list` means a list of `items`. Empty: anything."""
    items: tuple[type, ...] = ()

    def accepts(self, value: object) -> bool:
        if value is None or not self.types:
            return True
        if isinstance(value, bool) and bool not in self.types:
            return False  # True is an int to Python, never to a surface
        if isinstance(value, list | tuple):
            return list in self.types and all(
                isinstance(item, self.items) and not isinstance(item, bool) for item in value
            )
        return isinstance(value, tuple(t for t in self.types if t is not list))

    def describe(self) -> str:
        words = {str: "text", int: "a whole number", bool: "yes or no", float: "a number"}
        named = [words.get(t, t.__name__) for t in self.types if t is not list]
        if list in self.types:
            named.append("a list of " + " or ".join(words.get(t, t.__name__) for t in self.items))
        return " or ".join(named)


def _allowed(annotation: Any) -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(types, list item types) a field's annotation admits; ((), ()) for Any."""
    if annotation is Any:
        return (), ()
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        found: list[type] = []
        items: tuple[type, ...] = ()
        for arg in get_args(annotation):
            arg_types, arg_items = _allowed(arg)
            if not arg_types:
                return (), ()
            found.extend(t for t in arg_types if t is not type(None))
            items = items or arg_items
        return tuple(dict.fromkeys(found)), items
    if origin in (list, tuple):
        item_types = tuple(a for a in get_args(annotation) if a is not Ellipsis)
        return (list,), item_types or (object,)
    if annotation is type(None):
        return (type(None),), ()
    return (annotation,), ()


@dataclass(frozen=True)
class Params:
    """An action's parameters. Every field defaults to None: a surface sends only what
    the person typed, and `prepare` says what is missing in the action's own words."""

    @classmethod
    @cache
    def spec(cls) -> tuple[FieldSpec, ...]:
        hints = get_type_hints(cls)
        specs = []
        for f in fields(cls):
            allowed, items = _allowed(hints[f.name])
            specs.append(FieldSpec(f.name, f.metadata.get("wire", f.name), allowed, items))
        return tuple(specs)

    @classmethod
    @cache
    def _by_wire_name(cls) -> dict[str, FieldSpec]:
        return {s.name: s for s in cls.spec()}

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Self:
        """The params a surface sent, checked against the fields; raises InvalidInput."""
        if not raw:
            return cls._nothing()  # most calls of the most frequent actions send nothing
        if isinstance(raw, cls):
            return raw
        known = cls._by_wire_name()
        values: dict[str, Any] = {}
        for name, value in raw.items():
            spec = known.get(name) if isinstance(name, str) else None
            if spec is None:
                shown = str(name)[:40]
                raise UnexpectedParam(f"This request takes no `{shown}`.")
            if not spec.accepts(value):
                raise WrongParamType(f"`{spec.name}` must be {spec.describe()}.")
            values[spec.attr] = list(value) if isinstance(value, tuple) else value
        return cls(**values)

    @classmethod
    @cache
    def _nothing(cls) -> Self:
        return cls()

    def as_dict(self) -> dict[str, Any]:
        """The params as sent on the wire, without the fields left out."""
        return {
            s.name: getattr(self, s.attr) for s in self.spec() if getattr(self, s.attr) is not None
        }


@dataclass(frozen=True)
class NoParams(Params):
    """An action that takes nothing."""


class Data(Mapping[str, Any]):
    """What an action gives back to its surface, as a dataclass of named fields.

    It also reads as a mapping of those fields under their wire names
    (`data["role"]`, `data["for"]`), and `to_wire()` gives it whole as JSON-ready
    values, nested results included, so a surface serialises any action's result
    without knowing the action. Field names may not shadow the mapping's methods.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        clash = _RESERVED & set(inspect.get_annotations(cls))
        if clash:
            raise TypeError(f"{cls.__name__}: {sorted(clash)} would shadow Data's own methods")

    # Surfaces read a few keys of every reply, so the mapping methods are written out
    # rather than left to Mapping's generic ones.
    def __getitem__(self, key: str) -> Any:
        attr = _wire_names(type(self)).get(key)
        if attr is None:
            raise KeyError(key)
        return getattr(self, attr)

    def get(self, key: str, default: Any = None) -> Any:
        attr = _wire_names(type(self)).get(key)
        return default if attr is None else getattr(self, attr)

    def __contains__(self, key: object) -> bool:
        return key in _wire_names(type(self))

    def __iter__(self) -> Iterator[str]:
        return iter(_wire_names(type(self)))

    def __len__(self) -> int:
        return len(_wire_names(type(self)))

    def keys(self) -> KeysView[str]:
        return _wire_names(type(self)).keys()

    def as_dict(self) -> dict[str, Any]:
        """The fields under their wire names, values as they are (shallow)."""
        return {name: getattr(self, attr) for name, attr in _wire_names(type(self)).items()}

    def to_wire(self) -> dict[str, Any]:
        """The whole result as JSON-ready values (see `to_wire`)."""
        return {
            name: to_wire(getattr(self, attr)) for name, attr in _wire_names(type(self)).items()
        }


_RESERVED = frozenset(n for n in dir(Mapping) if not n.startswith("_")) | {"as_dict", "to_wire"}


def to_wire(value: Any) -> Any:
    """A value as JSON can hold it: results by wire name, other dataclasses by field,
    moments as ISO 8601, enums by value, sets sorted, containers item by item."""
    if isinstance(value, Data):
        return value.to_wire()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_wire(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted(to_wire(v) for v in value)
    if isinstance(value, list | tuple):
        return [to_wire(v) for v in value]
    raise TypeError(f"{type(value).__name__} has no wire form")


_WIRE_NAMES: dict[type, dict[str, str]] = {}


def _wire_names(cls: type) -> dict[str, str]:
    """Each field's wire name to its attribute, in field order (made once per class)."""
    names = _WIRE_NAMES.get(cls)
    if names is None:
        names = _WIRE_NAMES[cls] = {f.metadata.get("wire", f.name): f.name for f in fields(cls)}
    return names


@dataclass(frozen=True, eq=True)
class NoData(Data):
    """An action that gives back nothing but its message."""


NO_DATA = NoData()
