"""The configs shipped inside the package, found by name, and a commented listing of any resolved config.

The YAML files live in ``seq2seq/configs/`` so that an installed package carries them;
``configs/`` at the top of a clone is a link to that folder, so ``configs/quickstart.yaml``
and the name ``quickstart`` read the same file. The one-line help of each key is the
comment beside (or above) its field in :mod:`seq2seq.config`, read from the source, so
the dataclasses stay the single place where settings are documented.
"""

from __future__ import annotations

import dataclasses
import io
import re
import tokenize
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def shipped_configs() -> dict[str, Path]:
    """Name -> path of every config shipped with the package, e.g. ``{"quickstart": .../quickstart.yaml}``."""
    return {path.stem: path for path in sorted(CONFIG_DIR.glob("*.yaml"))}


def find_config(name_or_path: str | Path) -> Path:
    """An existing file as given, else the shipped config of that name (``quickstart`` or ``quickstart.yaml``).

    >>> find_config("quickstart").name
    'quickstart.yaml'
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory, not a file")
    shipped = shipped_configs()
    name = path.name[:-5] if path.name.endswith(".yaml") else path.name
    if path.parent == Path(".") and name in shipped:
        return shipped[name]
    raise ConfigError(f"config file not found: {name_or_path} (and no shipped config of that name; "
                      f"shipped: {', '.join(shipped)}; see `seq2seq config list`)")


def config_summary(path: Path) -> str:
    """The first sentence of a config file's leading comment, at most about 100 characters ('' if none)."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").strip())
    text = " ".join(lines)
    sentence = re.split(r"(?<=\.)\s", text, maxsplit=1)[0]
    return sentence if len(sentence) <= 100 else sentence[:sentence.rfind(" ", 0, 99)] + " ..."


def describe_config(cfg: Any) -> str:
    """``cfg`` as YAML that loads back to the same config, each key followed by its one-line help as a comment.

    >>> from seq2seq.config import Config
    >>> print(describe_config(Config()).splitlines()[1])  # doctest: +ELLIPSIS
      format: synthetic  # ...
    """
    lines = []
    for section in dataclasses.fields(cfg):
        value = getattr(cfg, section.name)
        lines.append(f"{section.name}:")
        helps = field_help(type(value))
        for item in dataclasses.fields(value):
            text = yaml.safe_dump(getattr(value, item.name), default_flow_style=True, width=1 << 16).strip()
            text = text.removesuffix("\n...").removesuffix("...").strip()
            lines.append(f"  {item.name}: {text}  # {helps[item.name]}")
    return "\n".join(lines) + "\n"


@lru_cache(maxsize=None)
def field_help(section_type: type) -> dict[str, str]:
    """Field name -> one line of help: the choices of a ``Literal`` field, then the comment on or above it."""
    hints = typing.get_type_hints(section_type)
    comments = _field_comments(section_type)
    helps = {}
    for item in dataclasses.fields(section_type):
        choices = typing.get_args(hints[item.name]) if typing.get_origin(hints[item.name]) is typing.Literal else ()
        parts = [" | ".join(map(str, choices))] if choices else []
        if comments.get(item.name):
            parts.append(comments[item.name])
        helps[item.name] = "; ".join(parts) or "(undocumented)"
    return helps


def _field_comments(section_type: type) -> dict[str, str]:
    """The comments of a dataclass's fields in its source: on the field's line, else the lines just above."""
    import inspect

    source = inspect.getsource(section_type)
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    result = {}
    for number, line in enumerate(source.splitlines(), start=1):
        match = re.match(r"    (\w+): [^=]+=", line)
        if not match:
            continue
        above, previous = [], number - 1
        while previous in comments and source.splitlines()[previous - 1].lstrip().startswith("#"):
            above.insert(0, comments[previous])
            previous -= 1
        # A block comment above a field may run to several sentences: its first one is the help.
        result[match.group(1)] = comments.get(number) or re.split(r"(?<=\.)\s", " ".join(above), maxsplit=1)[0]
    return result
