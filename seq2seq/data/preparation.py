"""From raw pairs to encoded, cached corpora: ``prepare(cfg)`` and the :class:`PreparedData` it returns.

``prepare`` reads the splits, drops empty pairs (and, in train, pairs longer than
``data.max_length`` subwords), trains or loads the tokenizer, encodes, and caches the
ids under a hash of the text, the tokenizer and ``max_length``, so a second run reads
them back in a fraction of a second. Every dropped or truncated pair is counted and
reported. Batching lives in :mod:`seq2seq.data.batches`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import Config, DataConfig
from ..errors import DataError
from ..textio import write_atomically
from .batches import EncodedCorpus, SplitReport, flatten, padding_ratio
from .corpora import SPLITS, ParallelText, Split, read_split
from .subwords import tokenizer_from_files
from .tokenizer import Tokenizer, hash_texts, load_or_train_tokenizer

CACHE_VERSION = 1  # bump when the layout of the cached arrays changes
PERCENTILES = (50, 90, 99)

logger = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """What :func:`prepare` returns; ``dev``/``test`` are None when the config has no such split."""

    tokenizer: Tokenizer
    train: EncodedCorpus
    dev: EncodedCorpus | None = None
    test: EncodedCorpus | None = None
    cache_dir: Path | None = field(default=None, repr=False)  # where the encoded ids are cached


def prepare(cfg: Config, verbose: bool = True, tokenizer: Tokenizer | None = None) -> PreparedData:
    """Read, clean, tokenize (training the tokenizer if needed), encode and cache every configured split.

    The tokenizer is ``tokenizer`` when given (fine-tuning), else the SentencePiece model file(s)
    of ``tokenizer.model`` / ``src_model`` + ``tgt_model``, else one trained on the training text.

    Prints (logs) the statistics when ``verbose``; dropped and truncated pairs are
    reported as warnings either way. Raises DataError for unreadable, misaligned or
    empty data before anything is written to the cache.

    >>> from seq2seq import load_config, prepare
    >>> data = prepare(load_config("tiny"))  # doctest: +SKIP
    >>> len(data.train), data.tokenizer.src_vocab_size  # doctest: +SKIP
    (400, 500)
    """
    root = cache_root(cfg.data)
    pairs: dict[Split, ParallelText] = {}
    empty_dropped: dict[Split, int] = {}
    for split in SPLITS:
        raw = read_split(cfg.data, split)
        if raw is not None:
            pairs[split], empty_dropped[split] = _drop_empty(raw, split)
    tokenizer = (tokenizer or tokenizer_from_files(cfg.tokenizer)
                 or load_or_train_tokenizer(pairs["train"].src, pairs["train"].tgt, cfg.tokenizer, root))
    directory = root / "data" / _data_key(tokenizer, pairs, cfg.data.max_length)
    if not (directory / "meta.json").is_file():
        encoded = {split: _encode_split(tokenizer, text, split, cfg.data.max_length, empty_dropped[split])
                   for split, text in pairs.items()}
        write_atomically(directory, lambda tmp: _save_splits(tmp, encoded))
    corpora = _load_splits(directory, pairs)
    for split, corpus in corpora.items():
        _warn_dropped(split, corpus.report, cfg.data.max_length)
    if verbose:
        for line in statistics_lines(corpora, cfg):
            logger.info("%s", line)
    return PreparedData(tokenizer=tokenizer, train=corpora["train"], dev=corpora.get("dev"),
                        test=corpora.get("test"), cache_dir=directory)


def cache_root(data_cfg: DataConfig) -> Path:
    """``data.cache_dir``, else ``$SEQ2SEQ_CACHE``, else ``~/.cache/seq2seq``."""
    return Path(data_cfg.cache_dir or os.environ.get("SEQ2SEQ_CACHE") or Path.home() / ".cache" / "seq2seq")


def _drop_empty(raw: ParallelText, split: Split) -> tuple[ParallelText, int]:
    """The pairs whose both sides hold text, and how many were dropped; DataError if none is left."""
    keep = [i for i, (src, tgt) in enumerate(zip(raw.src, raw.tgt)) if src.strip() and tgt.strip()]
    if not keep:
        raise DataError(f"empty corpus: {split} data {raw.origin} has no pair with text on both sides "
                        f"({len(raw)} lines read)")
    if len(keep) == len(raw):
        return raw, 0
    cleaned = ParallelText(src=[raw.src[i] for i in keep], tgt=[raw.tgt[i] for i in keep], origin=raw.origin)
    return cleaned, len(raw) - len(keep)


def _data_key(tokenizer: Tokenizer, pairs: dict[Split, ParallelText], max_length: int) -> str:
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, tokenizer.fingerprint(), max_length]).encode())
    for split, text in pairs.items():
        digest.update(f"{split}:{hash_texts(text.src)}:{hash_texts(text.tgt)}".encode())
    return digest.hexdigest()[:24]


@dataclass
class _EncodedSplit:
    src_ids: list[list[int]]
    tgt_ids: list[list[int]]
    kept: np.ndarray  # (N,) positions in the cleaned pairs
    report: SplitReport


def _encode_split(tokenizer: Tokenizer, text: ParallelText, split: Split, max_length: int,
                  dropped_empty: int) -> _EncodedSplit:
    """Encode; train drops pairs with a side over ``max_length``, dev/test truncate the source instead."""
    src_ids = tokenizer.encode_src_batch(text.src)
    tgt_ids = tokenizer.encode_tgt_batch(text.tgt)
    # Text that normalizes to nothing (e.g. only zero-width characters) encodes to no ids at all.
    nonempty = [i for i, (s, t) in enumerate(zip(src_ids, tgt_ids)) if s and t]
    read = len(text) + dropped_empty
    dropped_empty += len(text) - len(nonempty)
    if split == "train":
        kept = [i for i in nonempty if len(src_ids[i]) <= max_length and len(tgt_ids[i]) <= max_length]
        truncated = 0
    else:
        kept = nonempty
        truncated = sum(len(src_ids[i]) > max_length for i in kept)
    if not kept:
        raise DataError(f"empty corpus: no {split} pair of {text.origin} is left after dropping empty pairs"
                        f"{' and pairs longer than data.max_length=' + str(max_length) if split == 'train' else ''}")
    report = SplitReport(read=read, dropped_empty=dropped_empty, dropped_long=len(nonempty) - len(kept),
                         truncated=truncated)
    return _EncodedSplit([src_ids[i][:max_length] for i in kept], [tgt_ids[i] for i in kept],
                         np.asarray(kept, dtype=np.int64), report)


def _save_splits(directory: Path, encoded: dict[Split, _EncodedSplit]) -> None:
    meta = {}
    for split, item in encoded.items():
        src_flat, src_offsets = flatten(item.src_ids)
        tgt_flat, tgt_offsets = flatten(item.tgt_ids)
        np.savez(directory / f"{split}.npz", src_flat=src_flat, src_offsets=src_offsets, tgt_flat=tgt_flat,
                 tgt_offsets=tgt_offsets, kept=item.kept.astype(np.int64))
        meta[split] = vars(item.report)
    (directory / "meta.json").write_text(json.dumps({"version": CACHE_VERSION, "splits": meta}), encoding="utf-8")


def _load_splits(directory: Path, pairs: dict[Split, ParallelText]) -> dict[Split, EncodedCorpus]:
    meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))["splits"]
    corpora = {}
    for split, text in pairs.items():
        with np.load(directory / f"{split}.npz", allow_pickle=False) as arrays:
            kept = arrays["kept"].tolist()
            corpora[split] = EncodedCorpus(
                arrays["src_flat"], arrays["src_offsets"], arrays["tgt_flat"], arrays["tgt_offsets"],
                src_text=[text.src[i] for i in kept], tgt_text=[text.tgt[i] for i in kept],
                report=SplitReport(**meta[split]))
    return corpora


def _warn_dropped(split: Split, report: SplitReport, max_length: int) -> None:
    if report.dropped_empty:
        logger.warning("%s: dropped %d of %d pairs with an empty side", split, report.dropped_empty, report.read)
    if report.dropped_long:
        logger.warning("%s: dropped %d of %d pairs longer than data.max_length=%d subwords", split,
                       report.dropped_long, report.read, max_length)
    if report.truncated:
        logger.warning("%s: truncated %d of %d sources to data.max_length=%d subwords (all references kept)",
                       split, report.truncated, report.read, max_length)


def statistics_lines(corpora: dict[Split, EncodedCorpus], cfg: Config) -> list[str]:
    """Human-readable corpus statistics: pairs, tokens, length percentiles, and train padding."""
    lines = []
    for split, corpus in corpora.items():
        report = corpus.report
        lines.append(f"{split}: {report.kept} pairs kept of {report.read} "
                     f"(dropped {report.dropped_empty} empty, {report.dropped_long} too long; "
                     f"{report.truncated} sources truncated)")
        for side, lengths in (("src", corpus.src_lengths), ("tgt", corpus.tgt_lengths)):
            percentiles = np.percentile(lengths, PERCENTILES).round().astype(int).tolist()
            shown = ", ".join(f"p{p} {v}" for p, v in zip(PERCENTILES, percentiles))
            lines.append(f"  {side}: {int(lengths.sum())} tokens; length {shown}, max {int(lengths.max())}")
    train = corpora["train"]
    batches = train.batch_order(cfg.train.batch_size, by=cfg.train.batch_by, shuffle=True, seed=cfg.train.seed)
    lines.append(f"train batches at {cfg.train.batch_size} {cfg.train.batch_by}: {len(batches)}, "
                 f"padding {padding_ratio(train, batches):.1%}")
    return lines


