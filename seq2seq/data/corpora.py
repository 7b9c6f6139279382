"""Readers of parallel text: aligned files, TSV, JSON lines, Hugging Face ``datasets``, the synthetic task.

Every reader returns a :class:`ParallelText` (source and target sentences, aligned by
position) and fails with a :class:`DataError` naming the file, the line and how to fix
it. Readers return the text as it is; dropping empty or over-long pairs is the job of
``data.preparation.prepare`` so that it can count and report what it drops.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..config import DataConfig
from ..errors import DataError
from ..textio import atomic_file, decode_utf8, read_bytes, read_lines, split_lines
from .synthetic import generate_corpus

Split = Literal["train", "dev", "test"]
SPLITS: tuple[Split, ...] = ("train", "dev", "test")
HF_LOCAL_BUILDERS = ("json", "csv", "parquet", "arrow")


@dataclass
class ParallelText:
    """Aligned sentence pairs: ``src[i]`` translates to ``tgt[i]``. ``origin`` names the source for messages."""

    src: list[str]
    tgt: list[str]
    origin: str

    def __post_init__(self) -> None:
        assert len(self.src) == len(self.tgt), "readers must check alignment themselves"

    def __len__(self) -> int:
        return len(self.src)


def read_split(cfg: DataConfig, split: Split) -> ParallelText | None:
    """The raw pairs of one split as ``cfg`` describes them; None when that split is not configured."""
    if cfg.format == "synthetic":
        return read_synthetic(cfg, split)
    location = getattr(cfg, split)
    if not location:
        return None
    src_field = cfg.src_field or cfg.src_lang
    tgt_field = cfg.tgt_field or cfg.tgt_lang
    if cfg.format == "text":
        return read_text_pair(location, cfg.src_lang, cfg.tgt_lang)
    if cfg.format == "tsv":
        return read_tsv(location)
    if cfg.format == "jsonl":
        return read_jsonl(location, src_field, tgt_field)
    if cfg.format == "hf":
        return read_hf(cfg.hf_name, location, src_field, tgt_field, config_name=cfg.hf_config)
    raise AssertionError(f"unhandled data.format {cfg.format!r}")


def read_synthetic(cfg: DataConfig, split: Split) -> ParallelText | None:
    """One split of the synthetic task with the sizes and seed of ``cfg``; None for a split of size 0."""
    sizes = {"train": cfg.synthetic_train_size, "dev": cfg.synthetic_dev_size, "test": cfg.synthetic_test_size}
    if sizes[split] == 0:
        return None
    corpus = generate_corpus(cfg.synthetic_train_size, cfg.synthetic_dev_size, cfg.synthetic_test_size,
                             cfg.synthetic_seed)
    src, tgt = corpus[SPLITS.index(split)]
    return ParallelText(src=list(src), tgt=list(tgt), origin=f"synthetic {split} (seed {cfg.synthetic_seed})")


def resolve_text_file(prefix: str | Path, lang: str) -> Path:
    """``PREFIX.LANG`` or, failing that, ``PREFIX.LANG.gz``; DataError naming both when neither exists."""
    plain = Path(f"{prefix}.{lang}")
    gzipped = Path(f"{prefix}.{lang}.gz")
    for candidate in (plain, gzipped):
        if candidate.is_file():
            return candidate
    raise DataError(f"file not found: {plain} (nor {gzipped.name}); data paths are prefixes, "
                    f"relative to the working directory {Path.cwd()}")


def read_text_pair(prefix: str | Path, src_lang: str, tgt_lang: str) -> ParallelText:
    """Two aligned files ``PREFIX.SRC_LANG`` and ``PREFIX.TGT_LANG`` (each optionally ``.gz``), line by line."""
    src_path = resolve_text_file(prefix, src_lang)
    tgt_path = resolve_text_file(prefix, tgt_lang)
    src = read_lines(src_path)
    tgt = read_lines(tgt_path)
    if len(src) != len(tgt):
        raise DataError(f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}: parallel files "
                        f"must have one sentence per line, aligned line by line")
    return ParallelText(src=src, tgt=tgt, origin=f"{src_path} / {tgt_path}")


def read_tsv(path: str | Path) -> ParallelText:
    """One file of ``source<TAB>target`` lines. A blank line is an (empty) pair; other lines need exactly one tab."""
    src: list[str] = []
    tgt: list[str] = []
    for line_number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            src.append("")
            tgt.append("")
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(f"{path}, line {line_number}: expected 2 tab-separated fields (source, target), "
                            f"found {len(fields)}")
        src.append(fields[0])
        tgt.append(fields[1])
    return ParallelText(src=src, tgt=tgt, origin=str(path))


def read_jsonl(path: str | Path, src_key: str, tgt_key: str) -> ParallelText:
    """One JSON object per line; ``src_key``/``tgt_key`` name string fields (dotted for nested objects)."""
    text = decode_utf8(read_bytes(path), str(path))
    src: list[str] = []
    tgt: list[str] = []
    for line_number, line in enumerate(split_lines(text), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {line_number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
        src.append(_string_field(record, src_key, where, "data.src_field"))
        tgt.append(_string_field(record, tgt_key, where, "data.tgt_field"))
    return ParallelText(src=src, tgt=tgt, origin=str(path))


def _string_field(record: dict[str, Any], dotted_key: str, where: str, config_key: str) -> str:
    value: Any = record
    for part in dotted_key.split("."):
        if not isinstance(value, dict) or part not in value:
            available = ", ".join(sorted(value)) if isinstance(value, dict) else "none"
            raise DataError(f"{where}: no key {dotted_key!r} (keys here: {available}); set {config_key}")
        value = value[part]
    if not isinstance(value, str):
        raise DataError(f"{where}: {dotted_key!r} must be a string, got {type(value).__name__}")
    return value


def read_hf(name: str, split: str, src_column: str, tgt_column: str, config_name: str = "",
            cache_dir: str | None = None) -> ParallelText:
    """A Hugging Face ``datasets`` split: a hub dataset by name, or a local file with a builder.

    With ``name`` a hub name (``bentrevett/multi30k``), ``split`` is a split name
    (``train``, ``validation``). With ``name`` one of the local builders (``json``,
    ``csv``, ``parquet``, ``arrow``), ``split`` is a data file. Columns may be dotted to
    reach into nested ones (``translation.de``).
    """
    import datasets  # imported here: it is slow to import and only this format needs it

    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    if name in HF_LOCAL_BUILDERS:
        if not Path(split).is_file():
            raise DataError(f"file not found: {split} (data file for the {name!r} builder)")
        kwargs: dict[str, Any] = {"data_files": {"data": split}, "split": "data"}
        origin = f"{split} ({name})"
    else:
        kwargs = {"name": config_name or None, "split": split}
        origin = f"{name}{'/' + config_name if config_name else ''} split {split!r}"
    try:
        dataset = datasets.load_dataset(name, cache_dir=cache_dir, **kwargs)
    except Exception as exc:  # datasets raises many types (FileNotFoundError, ValueError, ConnectionError, ...)
        raise DataError(f"could not load Hugging Face dataset {origin}: {type(exc).__name__}: {exc}") from exc
    dataset = dataset.flatten()
    src = _hf_column(dataset, src_column, origin, "data.src_field")
    tgt = _hf_column(dataset, tgt_column, origin, "data.tgt_field")
    return ParallelText(src=src, tgt=tgt, origin=origin)


def _hf_column(dataset: Any, column: str, origin: str, config_key: str) -> list[str]:
    if column not in dataset.column_names:
        raise DataError(f"{origin} has no column {column!r} (columns: {', '.join(dataset.column_names)}); "
                        f"set {config_key}, dotted for nested columns, e.g. translation.de")
    # The csv builder reads an empty field as None: an empty sentence, dropped (and counted) later.
    values = ["" if value is None else value for value in dataset[column]]
    for row, value in enumerate(values):
        if not isinstance(value, str):
            raise DataError(f"{origin}, row {row}: column {column!r} must hold strings, "
                            f"got {type(value).__name__}")
    return values


def export_split(cfg: DataConfig, split: Split, prefix: str | Path) -> tuple[Path, Path, int]:
    """Write one split as the aligned files PREFIX.SRC_LANG and PREFIX.TGT_LANG -> (src path, tgt path, pairs).

    Useful for the synthetic task, which has no files of its own. Each file is written atomically.
    """
    pairs = read_split(cfg, split)
    if pairs is None:
        raise DataError(f"the config has no {split} split (data.{split} is empty or its size is 0)")
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = Path(f"{prefix}.{cfg.src_lang}"), Path(f"{prefix}.{cfg.tgt_lang}")
    for path, lines in zip(paths, (pairs.src, pairs.tgt)):
        with atomic_file(path) as handle:
            handle.writelines(line + "\n" for line in lines)
    return paths[0], paths[1], len(pairs)
