"""Dataclasses from mappings read from JSON or YAML, every value checked against its field's type.

One converter for every config that comes from a file: the network's ``config.json``
(:meth:`langseg.models.LSegConfig.from_dict`) and the training YAML (:mod:`langseg.train.config`).
Unknown keys, values of the wrong type (``"depth": "4"``, ``true`` for an integer) and non-finite
numbers raise :class:`ConfigError` naming the dotted key. Imports nothing heavy.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal

from .errors import LangsegError


class ConfigError(LangsegError, ValueError):
    """A config value that cannot be used; the message names the key (or file)."""


def show(value: Any) -> str:
    """``repr`` cut to 60 characters, for messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_TYPE_NAMES = {int: "int", float: "float (a finite number)", str: "str", bool: "bool (true or false)"}


def convert(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against the type ``hint`` (lists become tuples where the hint says tuple)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        return _convert_union(value, args, where)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {show(value)} is not one of {list(args)}")
        return value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin in (list, tuple, dict):
        return _convert_container(value, origin, args, where)
    if (
        hint is float
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    ):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and isinstance(value, hint):
        return value
    raise ConfigError(f"{where}: expected {_TYPE_NAMES.get(hint, hint)}, got {show(value)}")


def _convert_union(value: Any, args: tuple, where: str) -> Any:
    if value is None and type(None) in args:
        return None
    errors = []
    for a in args:
        if a is not type(None):
            try:
                return convert(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
    raise ConfigError(errors[0] if errors else f"{where}: invalid value {show(value)}")


def _convert_container(value: Any, origin: type, args: tuple, where: str) -> Any:
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {show(value)}")
        return dict(value)
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list, got {show(value)}")
    if origin is list:
        return [convert(v, args[0], f"{where}.{i}") for i, v in enumerate(value)]
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(convert(v, args[0], f"{where}.{i}") for i, v in enumerate(value))
    if len(value) != len(args):
        raise ConfigError(f"{where}: expected a list of {len(args)} values, got {show(value)}")
    return tuple(convert(v, a, f"{where}.{i}") for i, (v, a) in enumerate(zip(value, args)))


def from_dict(cls: type, values: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping; ``where`` is the dotted key of the mapping ("" at the top).

    Checks in ``cls.__post_init__`` that fail (``ValueError``/``TypeError``) are reported as a
    :class:`ConfigError` under ``where``.
    """
    name = where or "config"
    if not isinstance(values, dict):
        raise ConfigError(f"{name}: expected a mapping of {cls.__name__} fields, got {show(values)}")
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{name}: unknown key(s) {unknown}; expected some of {fields}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: convert(v, hints[k], f"{where}.{k}" if where else k) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{name}: {e}") from None
