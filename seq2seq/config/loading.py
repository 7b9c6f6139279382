"""Building a :class:`Config`: YAML files (or shipped config names), ``--set`` overrides, plain dicts; writing it back.

YAML supplies a partial dict, the command line supplies dotted overrides
(``--set train.lr=1e-3``); :func:`load_config` merges both into the dict *before*
the dataclasses are built, coerces each value to its field's declared type, and
rejects unknown keys with the closest valid key suggested.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml

from ..catalog import find_config
from ..errors import ConfigError
from ..writing import atomic_file
from .coercion import build_section, parse_yaml, suggest
from .sections import Config


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or start from the defaults), apply ``section.key=value`` overrides, build and validate.

    ``path`` is a file or the name of a shipped config (``seq2seq config list``):

    >>> from seq2seq import load_config
    >>> load_config("quickstart", ["train.max_steps=200"]).train.max_steps
    200
    """
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(find_config(path))
    for item in overrides or []:
        _apply_override(raw, item)
    return config_from_dict(raw)


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Build a :class:`Config` from a (partial) nested dict, coercing types; errors name the key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(raw).__name__}")
    sections = {}
    for section_name, section_value in raw.items():
        section_type = _section_types().get(section_name)
        if section_type is None:
            raise ConfigError(f"unknown config section {section_name!r}{suggest(section_name, _section_types())}")
        if section_value is None:
            section_value = {}
        if not isinstance(section_value, dict):
            raise ConfigError(f"config section {section_name!r} must be a mapping, got {section_value!r}")
        sections[section_name] = build_section(section_name, section_type, section_value)
    return Config(**sections)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain nested dicts (YAML- and checkpoint-safe)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically (a full disk leaves the previous file, never an empty one)."""
    with atomic_file(path, "w") as handle:
        handle.write(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def replace_config(cfg: Config, section: str, **changes: Any) -> Config:
    """A copy of ``cfg`` with fields of one section changed (validated again)."""
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **changes)})


def _read_yaml(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory, not a file")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (data, model, ...), got {type(raw).__name__}")
    return raw


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or key.count(".") != 1:
        raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.lr=1e-3")
    section, name = key.split(".")
    try:
        value = parse_yaml(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    section_dict = raw.setdefault(section, {})
    if not isinstance(section_dict, dict):
        raise ConfigError(f"config section {section!r} must be a mapping")
    section_dict[name] = value


def _section_types() -> dict[str, type]:
    return {f.name: typing.get_type_hints(Config)[f.name] for f in dataclasses.fields(Config)}


