"""Validation machinery of the config: type coercion from YAML, checks with messages that name the key, what
was expected and what was found."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from semscale.errors import ConfigError

Switch = Literal["auto", "on", "off"]
"""A three-way option (``cluster.gpu``, ``training.mixed_precision``); YAML's true/false (on/off, yes/no)
read as "on"/"off"."""

ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")
ROLES = ("train", "test", "predict")

# --- validation machinery -------------------------------------------------------------------------
class _FieldError(ConfigError):
    """A config value is invalid; ``from_dict`` prefixes the file name when re-raising it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"`{key}`: {message}")
        self.key, self.message = key, message


def _check(ok: bool, key: str, expected: str, got: Any) -> None:
    if not ok:
        raise _FieldError(key, f"expected {expected}, got {got!r}")


def _switch(section: Any, name: str, key: str) -> None:
    """Check a :data:`Switch` field of a frozen section; a bool (Python, or YAML's on/off) becomes on/off."""
    value = getattr(section, name)
    if isinstance(value, bool):
        object.__setattr__(section, name, "on" if value else "off")
        return
    _check(value in typing.get_args(Switch), key, f"{_type_name(Switch)} (or true/false)", value)


def choices(section: type, name: str) -> tuple[str, ...]:
    """The values the Literal-typed option ``name`` of a section class allows (for argparse ``choices``)."""
    tp = typing.get_type_hints(section)[name]
    if typing.get_origin(tp) is not Literal:
        raise TypeError(f"Expected a Literal-typed option for {section.__name__}.{name}. Got {tp}.")
    return tuple(typing.get_args(tp))


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = " or ".join(_type_name(a) for a in args)
        return f"{inner} or null" if len(args) < len(typing.get_args(tp)) else inner
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}s"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string",
            Path: "a file path (string)"}.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against type ``tp`` (as written in the dataclasses above) and convert it."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            if dataclasses.is_dataclass(arg) and isinstance(value, Mapping):
                return _coerce(value, arg, key)  # a section's own error (its unknown or wrong key) stands
            try:
                return _coerce(value, arg, key)
            except _FieldError:
                continue
        raise _FieldError(key, f"expected {_type_name(tp)}, got {_describe(value)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, bool) and {"on", "off"} <= set(allowed):
            return "on" if value else "off"  # YAML 1.1 reads on/off/yes/no as booleans
        if not isinstance(value, bool) and value in allowed:
            return value
        raise _FieldError(key, f"expected {_type_name(tp)}, got {_describe(value)}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _FieldError(key, f"expected {_type_name(tp)}, got {_describe(value)}")
        (item_tp, *_rest) = typing.get_args(tp)
        return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return _build_section(tp, value, key)
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. `sample: 1`
    elif tp is Path:
        if isinstance(value, (str, Path)) and str(value):
            return Path(value)
    else:  # pragma: no cover - a type this module does not use
        raise TypeError(tp)
    raise _FieldError(key, f"expected {_type_name(tp)}, got {_describe(value)}")


def _build_section(cls: type, data: Any, key: str) -> Any:
    """Build a flat section dataclass from a mapping, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise _FieldError(key, f"expected a mapping, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise _FieldError(f"{key}.{unknown[0]}", f"unknown key (known keys: {', '.join(sorted(fields))})")
    kwargs = {name: _coerce(value, hints[name], f"{key}.{name}") for name, value in data.items()}
    from_recipe = getattr(cls, "from_recipe", None)
    try:
        if from_recipe is not None and "recipe" in kwargs:
            return from_recipe(**kwargs)  # the recipe's defaults under the keys given
        return cls(**kwargs)
    except _FieldError:
        raise
    except TypeError as exc:  # a required key is missing
        raise _FieldError(key, f"incomplete section: {exc}") from None


def _resolve(path: Path, base: Path, key: str, check_files: bool) -> Path:
    path = path.expanduser()
    full = path if path.is_absolute() else (base / path)
    if check_files and not full.is_file():
        raise _FieldError(key, f"expected an existing file, got {str(path)!r} (looked for {full})")
    return full


