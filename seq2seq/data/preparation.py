"""From raw pairs to encoded, cached corpora: ``prepare(cfg)`` and the :class:`PreparedData` it returns.

``prepare`` streams every corpus of every split once (:mod:`seq2seq.data.store`): it
drops pairs with a blank side, writes the text to the cache entry being built and hashes
the bytes it reads. It then trains the tokenizer on a random sample of at most
``MAX_TRAIN_SENTENCES`` training sentences, read back from that text (the sample is
drawn from the stored text by index, so no sentence is held in memory), or loads it from
the cache, and encodes the splits on every core (:mod:`seq2seq.data.encoding`). Train
drops pairs longer than ``data.max_length`` subwords; dev and test truncate the source.
Every dropped or truncated pair is counted, per corpus, and reported.

The entry is keyed by the content hashes, the tokenizer and ``max_length``, verified
against its checksums at every start (:mod:`seq2seq.data.cache`), and opened as memory
maps. The content hash of each file is remembered under its inode, size and times, so a
start with unchanged files reads none of them. Batching lives in :mod:`seq2seq.data.batches`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import Config, DataConfig
from ..errors import ConfigError, DataError
from .batches import EncodedCorpus, SplitReport, padding_ratio
from .cache import (file_identity, install_entry, remember_hash, remembered_hash, scratch_directory, verify_entry,
                    warn_damaged, write_manifest)
from .columns import LineSample
from .encoding import EMPTY, LONG, TRUNCATED, encode_splits, ids_dtype
from .progress import ProgressMeter
from .store import CorpusLines, collect_split, corpus_hash, open_split, read_meta, text_path, write_meta
from .streaming import SPLITS, CorpusSource, Split, corpus_sources
from .subwords import tokenizer_from_files
from .tokenizer import Tokenizer
from .tokenizer_training import MAX_TRAIN_SENTENCES, load_cached_tokenizer, load_or_train_tokenizer, stream_tokenizer_key

CACHE_VERSION = 2  # bump when the layout of the cached files changes
PERCENTILES = (50, 90, 99)
SAMPLE_SEED = 1  # which training pairs the tokenizer sample holds, when the corpus is larger than the sample

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

    Prints (logs) the statistics and, for large corpora, the progress when ``verbose``;
    dropped and truncated pairs are reported as warnings either way. Raises DataError for
    unreadable, misaligned or empty data, leaving nothing in the cache.

    >>> from seq2seq import load_config, prepare
    >>> data = prepare(load_config("tiny"))  # doctest: +SKIP
    >>> len(data.train), data.tokenizer.src_vocab_size  # doctest: +SKIP
    (400, 500)
    """
    root = cache_root(cfg.data)
    sources = {split: found for split in SPLITS if (found := corpus_sources(cfg.data, split))}
    given = tokenizer or tokenizer_from_files(cfg.tokenizer)
    if tokenizer is not None and tokenizer.target_order != cfg.tokenizer.target_order:
        raise ConfigError(f"the given tokenizer (that of the checkpoint being fine-tuned) writes targets "
                          f"{tokenizer.target_order}, but tokenizer.target_order is {cfg.tokenizer.target_order}: "
                          f"set tokenizer.target_order={tokenizer.target_order}")
    if given is not None:
        given = _in_configured_order(given, cfg)
    opened = _open_unchanged(root, cfg, sources, given) or _build(root, cfg, sources, verbose, given)
    tokenizer, directory, corpora = opened
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


_Opened = tuple[Tokenizer, Path, dict[str, EncodedCorpus]]


def _open_unchanged(root: Path, cfg: Config, sources: dict[Split, list[CorpusSource]],
                    given: Tokenizer | None) -> _Opened | None:
    """The cached tokenizer (or ``given``) and corpora when every corpus is a file whose content hash is remembered."""
    hashes: dict[str, list[str]] = {}
    for split, split_sources in sources.items():
        hashes[split] = []
        for source in split_sources:
            file_hashes = [remembered_hash(root, path) for path in source.files]
            if not source.files or None in file_hashes:
                return None
            hashes[split].append(corpus_hash(source, file_hashes))  # type: ignore[arg-type]
    cached = given or load_cached_tokenizer(root / "tokenizer" / _tokenizer_key(hashes, cfg))
    if cached is None:
        return None
    tokenizer = _in_configured_order(cached, cfg)
    directory = root / "data" / _data_key(hashes, cfg, given)
    corpora = _open_entry(directory, tokenizer)
    return None if corpora is None else (tokenizer, directory, corpora)


def _build(root: Path, cfg: Config, sources: dict[Split, list[CorpusSource]], verbose: bool,
           given: Tokenizer | None) -> _Opened:
    """Stream the corpora into a new entry, train or load the tokenizer, encode, verify and install."""
    marks = [time.monotonic()]
    with scratch_directory(root / "data" / "entry", tidy=True) as tmp:
        total_bytes = sum(path.stat().st_size for found in sources.values() for s in found for path in s.files)
        with ProgressMeter("reading", total_bytes or None, "B", enabled=verbose) as meter:
            read = {split: collect_split(tmp, split, found, meter, file_identity) for split, found in sources.items()}
        hashes = {split: [corpus.sha256 for corpus in corpora] for split, corpora in read.items()}
        marks.append(time.monotonic())
        tokenizer = given or _in_configured_order(_trained_tokenizer(tmp, read["train"][-1].stop, cfg, root, hashes),
                                                  cfg)
        directory = root / "data" / _data_key(hashes, cfg, given)
        marks.append(time.monotonic())
        corpora = _open_entry(directory, tokenizer)  # another process may have built it meanwhile
        if corpora is None:
            lines = {split: found[-1].stop for split, found in read.items()}
            with ProgressMeter("encoding", sum(lines.values()), " pairs", enabled=verbose) as meter:
                statuses = encode_splits(tokenizer, tmp, lines, cfg.data.max_length, meter)
            write_meta(tmp, _meta(tokenizer, read, statuses, cfg.data.max_length))
            write_manifest(tmp)
            installed = install_entry(tmp, directory)
            corpora = _open_entry(directory, tokenizer, verified=installed)
            assert corpora is not None, f"the cache entry {directory} was damaged as soon as it was written"
            if verbose:
                logger.info("prepared in %.1f s: reading %.1f s, tokenizer %.1f s, encoding %.1f s",
                            time.monotonic() - marks[0], *np.diff([*marks, time.monotonic()]))
    for corpus in (corpus for found in read.values() for corpus in found):
        for path, sha256, identity in corpus.file_hashes:
            remember_hash(root, path, sha256, identity)
    return tokenizer, directory, corpora


def _trained_tokenizer(directory: Path, pairs: int, cfg: Config, root: Path, hashes: dict[str, list[str]]) -> Tokenizer:
    """The tokenizer trained (or cached) on a sample of the training text just read into ``directory``."""
    sample_src, sample_tgt = _tokenizer_sample(directory, pairs, cfg.tokenizer.joint)
    return load_or_train_tokenizer(sample_src, sample_tgt, cfg.tokenizer, root, key=_tokenizer_key(hashes, cfg))


def _in_configured_order(tokenizer: Tokenizer, cfg: Config) -> Tokenizer:
    """The tokenizer in ``tokenizer.target_order`` (SentencePiece models are trained and cached in one order)."""
    return tokenizer.in_order(cfg.tokenizer.target_order == "right_to_left")


def _tokenizer_key(hashes: dict[str, list[str]], cfg: Config) -> str:
    return stream_tokenizer_key(hashlib.sha256(json.dumps(hashes["train"]).encode()).hexdigest(), cfg.tokenizer)


def _data_key(hashes: dict[str, list[str]], cfg: Config, given: Tokenizer | None) -> str:
    """The cache entry's name: the corpora, max_length and the tokenizer (a given one by its fingerprint)."""
    tokenizer_id = given.fingerprint() if given is not None else _tokenizer_key(hashes, cfg)
    key = [CACHE_VERSION, tokenizer_id, cfg.data.max_length, hashes]
    if cfg.tokenizer.target_order != "left_to_right":  # keys of left-to-right entries stay as they were
        key.append(cfg.tokenizer.target_order)
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:24]


def _tokenizer_sample(directory: Path, pairs: int, joint: bool) -> tuple[LineSample, LineSample]:
    """The training sentences the tokenizer learns from: all, or a uniform random sample of pairs
    (in corpus order) so that at most MAX_TRAIN_SENTENCES sentences go into one model."""
    cap = MAX_TRAIN_SENTENCES // 2 if joint else MAX_TRAIN_SENTENCES
    rows = None if pairs <= cap else np.sort(np.random.default_rng(SAMPLE_SEED).choice(pairs, cap, replace=False))
    return LineSample(text_path(directory, "train", "src"), rows), LineSample(text_path(directory, "train", "tgt"), rows)


def _open_entry(directory: Path, tokenizer: Tokenizer, verified: bool = False) -> dict[str, EncodedCorpus] | None:
    """The corpora of a sound entry made with ``tokenizer``; None (with a warning if it exists) otherwise."""
    problem = None if verified else verify_entry(directory)
    if problem is None:
        try:
            meta = read_meta(directory)
            if meta["version"] == CACHE_VERSION and meta["tokenizer"] == tokenizer.fingerprint():
                return {split: open_split(directory, split, meta) for split in meta["splits"]}
            problem = "made by another version or with another tokenizer"
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
    if directory.exists():
        warn_damaged(directory, problem)
    return None


def _meta(tokenizer: Tokenizer, read: dict[Split, list[CorpusLines]], statuses: dict[str, np.ndarray],
          max_length: int) -> dict:
    """meta.json: id type, tokenizer, and the report of each split and each of its corpora."""
    splits = {}
    for split, corpora in read.items():
        reports = [_corpus_report(corpus, statuses[split]) for corpus in corpora]
        total = SplitReport(*(sum(getattr(r, name) for r in reports) for name in vars(reports[0])))
        if total.kept == 0:
            long = f" and pairs longer than data.max_length={max_length}" if split == "train" else ""
            raise DataError(f"empty corpus: no {split} pair of {' + '.join(c.origin for c in corpora)} is left "
                            f"after dropping empty pairs{long}")
        splits[split] = {"report": vars(total),
                         "corpora": [{"origin": c.origin, "report": vars(r)} for c, r in zip(corpora, reports)]}
    return {"version": CACHE_VERSION, "ids_dtype": ids_dtype(tokenizer).str, "tokenizer": tokenizer.fingerprint(),
            "splits": splits}


def _corpus_report(corpus: CorpusLines, status: np.ndarray) -> SplitReport:
    counts = np.bincount(status[corpus.start:corpus.stop], minlength=4).tolist()
    blank = corpus.read - (corpus.stop - corpus.start)
    return SplitReport(read=corpus.read, dropped_empty=blank + counts[EMPTY], dropped_long=counts[LONG],
                       truncated=counts[TRUNCATED])


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
        for origin, part in corpus.sources if len(corpus.sources) > 1 else []:
            lines.append(f"  {origin}: {part.kept} pairs kept of {part.read} (dropped {part.dropped_empty} empty, "
                         f"{part.dropped_long} too long; {part.truncated} sources truncated)")
    train = corpora["train"]
    batches = train.batch_arrays(cfg.train.batch_size, by=cfg.train.batch_by, shuffle=True, seed=cfg.train.seed)
    lines.append(f"train batches at {cfg.train.batch_size} {cfg.train.batch_by}: {len(batches)}, "
                 f"padding {padding_ratio(train, batches):.1%}")
    return lines


