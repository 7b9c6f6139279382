"""Typed values from YAML: a YAML 1.2 scalar reader, and coercion of plain values to a dataclass's field types.

Nothing here knows the package's settings; :mod:`seq2seq.config.sections` declares them and uses
these helpers to build its sections, so every error names the dotted key it is about.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from ..errors import ConfigError


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 scalars.

    YAML 1.1 reads ``off``, ``no``, ``on`` and ``yes`` as booleans (``amp: off`` would become
    False, ``src_lang: no`` too) and ``1e-3`` as a string; here only true/false are booleans
    and exponent floats are floats, in files and ``--set`` values alike.
    """


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                                    re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
                                    list("-+0123456789."))


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


def build_section(section_name: str, section_type: type, values: dict[str, Any]) -> Any:
    """``section_type(**values)`` with each value coerced to its field's type; unknown keys are refused."""
    hints = typing.get_type_hints(section_type)
    kwargs = {}
    for name, value in values.items():
        if name not in hints:
            raise ConfigError(f"unknown config key {section_name}.{name}{suggest(name, hints, section_name)}")
        kwargs[name] = coerce(f"{section_name}.{name}", value, hints[name])
    return section_type(**kwargs)


def suggest(name: str, valid: dict[str, Any], section: str | None = None) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
    prefix = f"{section}." if section else ""
    if close:
        return f"; did you mean {prefix}{close[0]}?"
    return f"; valid keys: {', '.join(prefix + k for k in valid)}"


def coerce(key: str, value: Any, annotation: Any) -> Any:
    """Convert a YAML or command-line value to the declared type, or raise naming the key and the type."""
    origin = get_origin(annotation)
    if origin is Literal:
        choices = get_args(annotation)
        if value not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, choices))} (got {value!r})")
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for option in get_args(annotation):
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return coerce(key, value, option)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key} has an invalid value {value!r}")
    if origin is list:
        (item_type,) = get_args(annotation)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [coerce(f"{key}[{i}]", v, item_type) for i, v in enumerate(value)]
    return _coerce_scalar(key, value, annotation)


def _coerce_scalar(key: str, value: Any, annotation: type) -> Any:
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(f"{key} must be a boolean (true/false), got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            # Values given as text (a quoted YAML scalar, say) are read as Python floats.
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if annotation is str:
        if value is None:
            return ""
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return str(value)
    raise AssertionError(f"config field {key} has an unsupported type {annotation!r}")
