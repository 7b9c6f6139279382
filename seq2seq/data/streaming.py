"""Streaming readers of parallel text: every format as a sequence of aligned blocks of pairs.

A split names one corpus or several (``data.train: [europarl, tsv:commoncrawl.tsv]``);
:func:`corpus_sources` resolves each into a :class:`CorpusSource` and
:func:`pair_blocks` streams its pairs as blocks ``(sources, targets)`` of a few thousand
sentences, so no reader ever holds a whole corpus. Each reader hands the bytes it reads
(or, for Hugging Face datasets and the synthetic task, the sentences) to a hash, which
keys the cache, and reports progress in bytes of the files on disk.

Errors are those of the whole-file readers: the file and line of invalid UTF-8, of a
TSV line without one tab or of a bad JSON line, and both files and their line counts
when two parallel files differ in length.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config import DataConfig
from ..errors import DataError
from ..textio import stream_line_blocks
from .synthetic import generate_corpus

Split = Literal["train", "dev", "test"]
SPLITS: tuple[Split, ...] = ("train", "dev", "test")
FORMATS = ("text", "tsv", "jsonl", "hf", "synthetic")
HF_LOCAL_BUILDERS = ("json", "csv", "parquet", "arrow")
BLOCK_PAIRS = 10_000  # pairs per block for readers that are not read by the byte (Hugging Face, synthetic)

Blocks = Iterator[tuple[list[str], list[str]]]
Feed = Callable[[bytes], Any]
Progress = Callable[[int], Any]


@dataclass(frozen=True)
class CorpusSource:
    """One corpus of one split: its format, where it is, and what its content hash must cover."""

    format: str
    location: str  # path prefix (text), file (tsv, jsonl, hf local builder), split name (hf hub, synthetic)
    origin: str  # how messages name it
    files: tuple[Path, ...] = ()  # the files it is read from (text, tsv, jsonl); empty for hf and synthetic
    options: dict[str, Any] = field(default_factory=dict)  # fields, dataset name, sizes: part of the cache key


def corpus_entries(value: str | list[str]) -> list[str]:
    """The corpora a split names: one string or a list of them."""
    return [value] if isinstance(value, str) else list(value)


def split_format(entry: str, default: str) -> tuple[str, str]:
    """``FORMAT:LOCATION`` -> (format, location); an entry without a known format prefix uses ``default``."""
    prefix, sep, rest = entry.partition(":")
    return (prefix, rest) if sep and prefix in FORMATS else (default, entry)


def corpus_sources(cfg: DataConfig, split: Split) -> list[CorpusSource]:
    """The corpora of one split as ``cfg`` describes them (empty when the split is not configured).

    Files are resolved here, so a missing file is reported before anything is read.
    """
    if cfg.format == "synthetic":
        return synthetic_source(cfg, split)
    return [_source(cfg, fmt, location) for fmt, location in
            (split_format(entry, cfg.format) for entry in corpus_entries(getattr(cfg, split)) if entry)]


def _source(cfg: DataConfig, fmt: str, location: str) -> CorpusSource:
    src_field = cfg.src_field or cfg.src_lang
    tgt_field = cfg.tgt_field or cfg.tgt_lang
    if fmt == "text":
        src_path, tgt_path = resolve_text_file(location, cfg.src_lang), resolve_text_file(location, cfg.tgt_lang)
        return CorpusSource(fmt, location, f"{src_path} / {tgt_path}", (src_path, tgt_path))
    if fmt in ("tsv", "jsonl"):
        path = Path(location)
        if not path.is_file():
            raise DataError(f"file not found: {path}")
        options = {"fields": [src_field, tgt_field]} if fmt == "jsonl" else {}
        return CorpusSource(fmt, location, str(path), (path,), options)
    if fmt == "hf":
        return CorpusSource(fmt, location, hf_origin(cfg.hf_name, location, cfg.hf_config),
                            options={"name": cfg.hf_name, "config": cfg.hf_config, "fields": [src_field, tgt_field]})
    raise DataError(f"data format {fmt!r} cannot be one of several corpora (use one of text, tsv, jsonl, hf)")


def synthetic_source(cfg: DataConfig, split: Split) -> list[CorpusSource]:
    sizes = {"train": cfg.synthetic_train_size, "dev": cfg.synthetic_dev_size, "test": cfg.synthetic_test_size}
    if sizes[split] == 0:
        return []
    return [CorpusSource("synthetic", split, f"synthetic {split} (seed {cfg.synthetic_seed})",
                         options={"sizes": list(sizes.values()), "seed": cfg.synthetic_seed})]


def resolve_text_file(prefix: str | Path, lang: str) -> Path:
    """``PREFIX.LANG`` or, failing that, ``PREFIX.LANG.gz``; DataError naming both when neither exists."""
    plain = Path(f"{prefix}.{lang}")
    gzipped = Path(f"{prefix}.{lang}.gz")
    for candidate in (plain, gzipped):
        if candidate.is_file():
            return candidate
    raise DataError(f"file not found: {plain} (nor {gzipped.name}); data paths are prefixes, "
                    f"relative to the working directory {Path.cwd()}")


def pair_blocks(source: CorpusSource, feeds: list[Feed], on_progress: Progress | None = None) -> Blocks:
    """Stream the pairs of ``source`` in aligned blocks.

    ``feeds`` has one callable per file of ``source.files`` (each receives that file's
    decompressed bytes in order) or, for hf and synthetic, one that receives the text.
    """
    if source.format == "text":
        return text_pair_blocks(*source.files, feeds=feeds, on_progress=on_progress)
    if source.format == "tsv":
        return tsv_blocks(source.files[0], feeds[0], on_progress)
    if source.format == "jsonl":
        return jsonl_blocks(source.files[0], *source.options["fields"], feed=feeds[0], on_progress=on_progress)
    if source.format == "hf":
        return hf_blocks(source.options["name"], source.location, *source.options["fields"],
                         config_name=source.options["config"], feed=feeds[0])
    sizes, seed = source.options["sizes"], source.options["seed"]
    src, tgt = generate_corpus(*sizes, seed)[SPLITS.index(source.location)]  # type: ignore[arg-type]
    return _fed_blocks(_in_blocks(list(src), list(tgt)), feeds[0])


def text_pair_blocks(src_path: Path, tgt_path: Path, feeds: list[Feed] | None = None,
                     on_progress: Progress | None = None) -> Blocks:
    """Two aligned files read side by side; DataError naming both files and counts when they differ in length."""
    src_feed, tgt_feed = feeds or (None, None)
    src_blocks = stream_line_blocks(src_path, src_feed, on_progress)
    tgt_blocks = stream_line_blocks(tgt_path, tgt_feed, on_progress)
    src_lines: list[str] = []
    tgt_lines: list[str] = []
    src_open = tgt_open = True
    paired = 0
    while src_open or tgt_open:
        if src_open and (len(src_lines) <= len(tgt_lines) or not tgt_open):
            src_open = _extend(src_lines, src_blocks)
        else:
            tgt_open = _extend(tgt_lines, tgt_blocks)
        count = min(len(src_lines), len(tgt_lines))
        if count:
            yield src_lines[:count], tgt_lines[:count]
            del src_lines[:count], tgt_lines[:count]
            paired += count
        if not (src_open and tgt_open) and (src_lines or tgt_lines):
            break  # one file ended first: count the rest of the other without keeping it
    if src_lines or tgt_lines:
        src_total = paired + len(src_lines) + sum(len(lines) for _, lines in src_blocks)
        tgt_total = paired + len(tgt_lines) + sum(len(lines) for _, lines in tgt_blocks)
        raise DataError(f"{src_path} has {src_total} lines but {tgt_path} has {tgt_total}: parallel files "
                        f"must have one sentence per line, aligned line by line")


def _extend(lines: list[str], blocks: Iterator[tuple[int, list[str]]]) -> bool:
    """Append the next block to ``lines``; False when there is none."""
    block = next(blocks, None)
    if block is None:
        return False
    lines.extend(block[1])
    return True


def tsv_blocks(path: Path, feed: Feed | None = None, on_progress: Progress | None = None) -> Blocks:
    """``source<TAB>target`` lines. A blank line is an (empty) pair; other lines need exactly one tab."""
    for first_line, lines in stream_line_blocks(path, feed, on_progress):
        src: list[str] = []
        tgt: list[str] = []
        for offset, line in enumerate(lines):
            fields = line.split("\t") if line.strip() else ["", ""]
            if len(fields) != 2:
                raise DataError(f"{path}, line {first_line + offset}: expected 2 tab-separated fields "
                                f"(source, target), found {len(fields)}")
            src.append(fields[0])
            tgt.append(fields[1])
        yield src, tgt


def jsonl_blocks(path: Path, src_key: str, tgt_key: str, feed: Feed | None = None,
                 on_progress: Progress | None = None) -> Blocks:
    """One JSON object per line (blank lines skipped); ``src_key``/``tgt_key`` name string fields, dotted
    for nested objects."""
    for first_line, lines in stream_line_blocks(path, feed, on_progress):
        src: list[str] = []
        tgt: list[str] = []
        for offset, line in enumerate(lines):
            if not line.strip():
                continue
            where = f"{path}, line {first_line + offset}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(record, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
            src.append(_string_field(record, src_key, where, "data.src_field"))
            tgt.append(_string_field(record, tgt_key, where, "data.tgt_field"))
        yield src, tgt


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


def hf_origin(name: str, split: str, config_name: str) -> str:
    if name in HF_LOCAL_BUILDERS:
        return f"{split} ({name})"
    return f"{name}{'/' + config_name if config_name else ''} split {split!r}"


def hf_blocks(name: str, split: str, src_column: str, tgt_column: str, config_name: str = "",
              cache_dir: str | None = None, feed: Feed | None = None) -> Blocks:
    """A Hugging Face ``datasets`` split, read in blocks of :data:`BLOCK_PAIRS` rows.

    ``datasets`` keeps the split as memory-mapped Arrow files, so iterating over it in
    blocks holds one block of strings at a time, never a list of the whole column. With
    ``name`` a hub name, ``split`` is a split name; with ``name`` a local builder (json,
    csv, parquet, arrow), ``split`` is a data file. Columns may be dotted (``translation.de``).
    """
    dataset = load_hf_dataset(name, split, config_name, cache_dir)
    origin = hf_origin(name, split, config_name)
    for column, key in ((src_column, "data.src_field"), (tgt_column, "data.tgt_field")):
        if column not in dataset.column_names:
            raise DataError(f"{origin} has no column {column!r} (columns: {', '.join(dataset.column_names)}); "
                            f"set {key}, dotted for nested columns, e.g. translation.de")
    row = 0
    for batch in dataset.select_columns([src_column, tgt_column]).iter(batch_size=BLOCK_PAIRS):
        src = _hf_strings(batch[src_column], src_column, origin, row)
        tgt = _hf_strings(batch[tgt_column], tgt_column, origin, row)
        row += len(src)
        if feed is not None:
            _feed_text(feed, src, tgt)
        yield src, tgt


def load_hf_dataset(name: str, split: str, config_name: str = "", cache_dir: str | None = None) -> Any:
    """The flattened ``datasets.Dataset`` of a hub split or a local data file; DataError if it cannot load."""
    import datasets  # imported here: it is slow to import and only this format needs it

    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    if name in HF_LOCAL_BUILDERS:
        if not Path(split).is_file():
            raise DataError(f"file not found: {split} (data file for the {name!r} builder)")
        kwargs: dict[str, Any] = {"data_files": {"data": split}, "split": "data"}
    else:
        kwargs = {"name": config_name or None, "split": split}
    try:
        dataset = datasets.load_dataset(name, cache_dir=cache_dir, **kwargs)
    except Exception as exc:  # datasets raises many types (FileNotFoundError, ValueError, ConnectionError, ...)
        raise DataError(f"could not load Hugging Face dataset {hf_origin(name, split, config_name)}: "
                        f"{type(exc).__name__}: {exc}") from exc
    return dataset.flatten()


def _hf_strings(values: list[Any], column: str, origin: str, first_row: int) -> list[str]:
    # The csv builder reads an empty field as None: an empty sentence, dropped (and counted) later.
    values = ["" if value is None else value for value in values]
    for offset, value in enumerate(values):
        if not isinstance(value, str):
            raise DataError(f"{origin}, row {first_row + offset}: column {column!r} must hold strings, "
                            f"got {type(value).__name__}")
    return values


def _in_blocks(src: list[str], tgt: list[str]) -> Blocks:
    for start in range(0, len(src), BLOCK_PAIRS):
        yield src[start:start + BLOCK_PAIRS], tgt[start:start + BLOCK_PAIRS]


def _fed_blocks(blocks: Blocks, feed: Feed | None) -> Blocks:
    for src, tgt in blocks:
        if feed is not None:
            _feed_text(feed, src, tgt)
        yield src, tgt


def _feed_text(feed: Feed, src: list[str], tgt: list[str]) -> None:
    """Hash sentences (for sources without files): NUL cannot occur in either, so boundaries are kept."""
    feed("\0".join(src).encode("utf-8", "surrogatepass") + b"\1" + "\0".join(tgt).encode("utf-8", "surrogatepass")
         + b"\2")
