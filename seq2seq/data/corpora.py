"""Whole-corpus readers of parallel text: aligned files, TSV, JSON lines, Hugging Face ``datasets``, synthetic.

Each reader collects the blocks of its streaming counterpart in
:mod:`seq2seq.data.streaming` into a :class:`ParallelText`, for small corpora and tests;
``prepare`` streams instead. Errors name the file, the line and how to fix it. Readers
return the text as it is: dropping empty or over-long pairs is the job of ``prepare``, so
that it can count and report what it drops.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import DataConfig
from ..errors import DataError
from ..writing import atomic_file
from .streaming import (HF_LOCAL_BUILDERS, SPLITS, Blocks, CorpusSource, Split, corpus_sources, hf_blocks, hf_origin,
                        jsonl_blocks, pair_blocks, resolve_text_file, synthetic_source, text_pair_blocks,
                        tsv_blocks)

__all__ = ["HF_LOCAL_BUILDERS", "SPLITS", "ParallelText", "Split", "read_hf", "read_jsonl", "read_split",
           "read_synthetic", "read_text_pair", "read_tsv", "resolve_text_file"]


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


def _collect(blocks: Blocks, origin: str) -> ParallelText:
    src: list[str] = []
    tgt: list[str] = []
    for src_block, tgt_block in blocks:
        src.extend(src_block)
        tgt.extend(tgt_block)
    return ParallelText(src=src, tgt=tgt, origin=origin)


def read_split(cfg: DataConfig, split: Split) -> ParallelText | None:
    """The raw pairs of one split (all its corpora in order) as ``cfg`` describes them; None when absent."""
    sources = corpus_sources(cfg, split)
    if not sources:
        return None
    parts = [_read_source(source) for source in sources]
    return ParallelText(src=[s for part in parts for s in part.src], tgt=[t for part in parts for t in part.tgt],
                        origin=" + ".join(part.origin for part in parts))


def _read_source(source: CorpusSource) -> ParallelText:
    return _collect(pair_blocks(source, [None] * max(1, len(source.files))), source.origin)  # type: ignore[list-item]


def read_synthetic(cfg: DataConfig, split: Split) -> ParallelText | None:
    """One split of the synthetic task with the sizes and seed of ``cfg``; None for a split of size 0."""
    sources = synthetic_source(cfg, split)
    return _read_source(sources[0]) if sources else None


def read_text_pair(prefix: str | Path, src_lang: str, tgt_lang: str) -> ParallelText:
    """Two aligned files ``PREFIX.SRC_LANG`` and ``PREFIX.TGT_LANG`` (each optionally ``.gz``), line by line."""
    src_path = resolve_text_file(prefix, src_lang)
    tgt_path = resolve_text_file(prefix, tgt_lang)
    return _collect(text_pair_blocks(src_path, tgt_path), f"{src_path} / {tgt_path}")


def read_tsv(path: str | Path) -> ParallelText:
    """One file of ``source<TAB>target`` lines. A blank line is an (empty) pair; other lines need exactly one tab."""
    return _collect(tsv_blocks(Path(path)), str(path))


def read_jsonl(path: str | Path, src_key: str, tgt_key: str) -> ParallelText:
    """One JSON object per line; ``src_key``/``tgt_key`` name string fields (dotted for nested objects)."""
    return _collect(jsonl_blocks(Path(path), src_key, tgt_key), str(path))


def read_hf(name: str, split: str, src_column: str, tgt_column: str, config_name: str = "",
            cache_dir: str | None = None) -> ParallelText:
    """A Hugging Face ``datasets`` split: a hub dataset by name, or a local file with a builder.

    With ``name`` a hub name (``bentrevett/multi30k``), ``split`` is a split name
    (``train``, ``validation``). With ``name`` one of the local builders (``json``,
    ``csv``, ``parquet``, ``arrow``), ``split`` is a data file. Columns may be dotted to
    reach into nested ones (``translation.de``).
    """
    return _collect(hf_blocks(name, split, src_column, tgt_column, config_name, cache_dir),
                    hf_origin(name, split, config_name))


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
