"""From raw pairs to padded batches: ``prepare(cfg)`` and the :class:`EncodedCorpus` it returns.

``prepare`` reads the splits, drops empty pairs (and, in train, pairs longer than
``data.max_length`` subwords), trains or loads the tokenizer, encodes, and caches the
ids under a hash of the text, the tokenizer and ``max_length``, so a second run reads
them back in a fraction of a second. Every dropped or truncated pair is counted and
reported. :meth:`EncodedCorpus.batch_order` buckets pairs by length so that batches
carry little padding; :meth:`EncodedCorpus.collate` builds the tensors of one batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .config import Config, DataConfig
from .corpora import SPLITS, ParallelText, Split, read_split
from .errors import DataError
from .atomic import write_atomically
from .tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer, hash_texts, load_or_train_tokenizer

CACHE_VERSION = 1  # bump when the layout of the cached arrays changes
PERCENTILES = (50, 90, 99)

logger = logging.getLogger(__name__)


@dataclass
class Batch:
    """One padded batch. Ids are int64; B sentences, S longest source, T longest target + 1.

    - ``src_ids`` (B, S), PAD_ID after each source; ``src_lengths`` (B,) int64, always on the
      CPU (``pack_padded_sequence`` wants them there).
    - ``tgt_in_ids`` (B, T) = BOS + y, ``tgt_out_ids`` (B, T) = y + EOS, both PAD_ID-padded;
      ``tgt_lengths`` (B,) = len(y) + 1, the real positions of either.
    - ``indices``: the position of each row in its corpus; ``num_tgt_tokens`` = sum(tgt_lengths).
    """

    src_ids: torch.Tensor
    src_lengths: torch.Tensor
    tgt_in_ids: torch.Tensor
    tgt_out_ids: torch.Tensor
    tgt_lengths: torch.Tensor
    indices: list[int]
    num_tgt_tokens: int

    def __len__(self) -> int:
        return len(self.indices)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy with the id tensors and ``tgt_lengths`` on ``device``; ``src_lengths`` stays on the CPU."""
        return Batch(src_ids=self.src_ids.to(device, non_blocking=non_blocking), src_lengths=self.src_lengths,
                     tgt_in_ids=self.tgt_in_ids.to(device, non_blocking=non_blocking),
                     tgt_out_ids=self.tgt_out_ids.to(device, non_blocking=non_blocking),
                     tgt_lengths=self.tgt_lengths.to(device, non_blocking=non_blocking),
                     indices=self.indices, num_tgt_tokens=self.num_tgt_tokens)

    def pin_memory(self) -> Batch:
        """A copy in page-locked memory, so that ``to(cuda, non_blocking=True)`` overlaps with compute."""
        return Batch(src_ids=self.src_ids.pin_memory(), src_lengths=self.src_lengths,
                     tgt_in_ids=self.tgt_in_ids.pin_memory(), tgt_out_ids=self.tgt_out_ids.pin_memory(),
                     tgt_lengths=self.tgt_lengths.pin_memory(), indices=self.indices,
                     num_tgt_tokens=self.num_tgt_tokens)


@dataclass(frozen=True)
class SplitReport:
    """What happened to the pairs of one split on their way from the reader to the ids."""

    read: int  # pairs the reader returned
    dropped_empty: int  # pairs with an empty (or blank) side
    dropped_long: int  # train only: a side longer than data.max_length subwords
    truncated: int  # dev/test only: sources cut to data.max_length subwords

    @property
    def kept(self) -> int:
        return self.read - self.dropped_empty - self.dropped_long


class EncodedCorpus:
    """The pairs of one split as ids (no BOS/EOS) and as text, stored flat for fast batching.

    ``src_ids``/``tgt_ids`` are lists of id lists; ``src_text``/``tgt_text`` are the raw
    strings (the references BLEU is computed against). Internally each side is one flat
    int32 array with offsets, so :meth:`collate` builds a batch with a few array ops.
    """

    def __init__(self, src_flat: np.ndarray, src_offsets: np.ndarray, tgt_flat: np.ndarray,
                 tgt_offsets: np.ndarray, src_text: list[str], tgt_text: list[str],
                 report: SplitReport | None = None) -> None:
        """``*_flat`` hold the ids of all sentences in a row; sentence i is ``flat[offsets[i]:offsets[i+1]]``."""
        if not (len(src_offsets) == len(tgt_offsets) == len(src_text) + 1 == len(tgt_text) + 1):
            raise ValueError("EncodedCorpus: ids and texts must describe the same number of pairs")
        self._src_flat, self._src_offsets = src_flat, src_offsets.astype(np.int64)
        self._tgt_flat, self._tgt_offsets = tgt_flat, tgt_offsets.astype(np.int64)
        self.src_lengths = np.diff(self._src_offsets)  # (N,) int64
        self.tgt_lengths = np.diff(self._tgt_offsets)  # (N,) int64, without EOS
        self.src_text = src_text
        self.tgt_text = tgt_text
        self.report = report or SplitReport(read=len(src_text), dropped_empty=0, dropped_long=0, truncated=0)

    @classmethod
    def from_ids(cls, src_ids: list[list[int]], tgt_ids: list[list[int]], src_text: list[str] | None = None,
                 tgt_text: list[str] | None = None, report: SplitReport | None = None) -> EncodedCorpus:
        """Build from per-sentence id lists (texts default to empty strings, e.g. in tests)."""
        if len(src_ids) != len(tgt_ids):
            raise ValueError(f"EncodedCorpus: {len(src_ids)} sources but {len(tgt_ids)} targets")
        src_flat, src_offsets = _flatten(src_ids)
        tgt_flat, tgt_offsets = _flatten(tgt_ids)
        return cls(src_flat, src_offsets, tgt_flat, tgt_offsets, src_text or [""] * len(src_ids),
                   tgt_text or [""] * len(tgt_ids), report)

    def __len__(self) -> int:
        return len(self.src_text)

    @cached_property
    def src_ids(self) -> list[list[int]]:
        return _unflatten(self._src_flat, self._src_offsets)

    @cached_property
    def tgt_ids(self) -> list[list[int]]:
        return _unflatten(self._tgt_flat, self._tgt_offsets)

    def arrays(self) -> dict[str, np.ndarray]:
        """The flat arrays, as the cache stores them."""
        return {"src_flat": self._src_flat, "src_offsets": self._src_offsets,
                "tgt_flat": self._tgt_flat, "tgt_offsets": self._tgt_offsets}

    def batch_order(self, max_tokens: int, by: Literal["tokens", "sentences"] = "tokens", shuffle: bool = True,
                    seed: int = 0, epoch: int = 0) -> list[list[int]]:
        """Batches of pair indices for one epoch, covering every pair exactly once.

        Pairs are sorted by source length, then target length (ties broken at random
        when ``shuffle``), and cut into consecutive runs, so each batch holds pairs of
        about the same lengths and little padding. With ``by="tokens"`` a batch's cost
        is ``n_sentences * max(longest source, longest target + 1)`` and stays within
        ``max_tokens`` (a single pair above it gets a batch of its own); with
        ``by="sentences"`` a batch has ``max_tokens`` pairs. The order of the batches is
        shuffled too. The result depends only on (seed, epoch) and the corpus.
        """
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
        rng = np.random.default_rng([seed, epoch]) if shuffle else None
        tie_break = rng.permutation(len(self)) if rng is not None else np.arange(len(self))
        order = np.lexsort((tie_break, self.tgt_lengths, self.src_lengths))
        if by == "tokens":
            batches = _pack_by_tokens(order, self.src_lengths, self.tgt_lengths + 1, max_tokens)
        elif by == "sentences":
            batches = [order[i:i + max_tokens].tolist() for i in range(0, len(order), max_tokens)]
        else:
            raise ValueError(f"by must be 'tokens' or 'sentences', got {by!r}")
        if rng is not None:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def collate(self, indices: list[int] | np.ndarray) -> Batch:
        """The padded tensors of the pairs ``indices`` (in that order); see :class:`Batch`."""
        rows = np.asarray(indices, dtype=np.int64)
        if rows.size == 0:
            raise ValueError("collate needs at least one index")
        src_lengths = self.src_lengths[rows]
        tgt_lengths = self.tgt_lengths[rows]
        src = _padded(self._src_flat, self._src_offsets[rows], src_lengths, int(src_lengths.max()))
        width = int(tgt_lengths.max()) + 1
        tgt = _padded(self._tgt_flat, self._tgt_offsets[rows], tgt_lengths, width)  # y, then PAD
        tgt_in = np.empty_like(tgt)
        tgt_in[:, 0] = BOS_ID
        tgt_in[:, 1:] = tgt[:, :-1]
        tgt[np.arange(len(rows)), tgt_lengths] = EOS_ID  # y + EOS
        return Batch(src_ids=torch.from_numpy(src), src_lengths=torch.from_numpy(src_lengths.copy()),
                     tgt_in_ids=torch.from_numpy(tgt_in), tgt_out_ids=torch.from_numpy(tgt),
                     tgt_lengths=torch.from_numpy(tgt_lengths + 1), indices=rows.tolist(),
                     num_tgt_tokens=int(tgt_lengths.sum()) + len(rows))


@dataclass
class PreparedData:
    """What :func:`prepare` returns; ``dev``/``test`` are None when the config has no such split."""

    tokenizer: Tokenizer
    train: EncodedCorpus
    dev: EncodedCorpus | None = None
    test: EncodedCorpus | None = None
    cache_dir: Path | None = field(default=None, repr=False)  # where the encoded ids are cached


def prepare(cfg: Config, verbose: bool = True) -> PreparedData:
    """Read, clean, tokenize (training the tokenizer if needed), encode and cache every configured split.

    Prints (logs) the statistics when ``verbose``; dropped and truncated pairs are
    reported as warnings either way. Raises DataError for unreadable, misaligned or
    empty data before anything is written to the cache.
    """
    root = cache_root(cfg.data)
    pairs: dict[Split, ParallelText] = {}
    empty_dropped: dict[Split, int] = {}
    for split in SPLITS:
        raw = read_split(cfg.data, split)
        if raw is not None:
            pairs[split], empty_dropped[split] = _drop_empty(raw, split)
    tokenizer = load_or_train_tokenizer(pairs["train"].src, pairs["train"].tgt, cfg.tokenizer, root)
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
        src_flat, src_offsets = _flatten(item.src_ids)
        tgt_flat, tgt_offsets = _flatten(item.tgt_ids)
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


def padding_ratio(corpus: EncodedCorpus, batches: list[list[int]]) -> float:
    """Share of pad positions in the source and target tensors of ``batches`` (targets count EOS as real)."""
    real = padded = 0
    for indices in batches:
        src_lengths = corpus.src_lengths[indices]
        tgt_lengths = corpus.tgt_lengths[indices] + 1
        real += int(src_lengths.sum() + tgt_lengths.sum())
        padded += len(indices) * int(src_lengths.max() + tgt_lengths.max())
    return 1.0 - real / padded if padded else 0.0


def _pack_by_tokens(order: np.ndarray, src_lengths: np.ndarray, tgt_lengths: np.ndarray,
                    max_tokens: int) -> list[list[int]]:
    """Cut ``order`` into consecutive runs whose ``n * max(src, tgt)`` stays within ``max_tokens``."""
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index, src_length, tgt_length in zip(order.tolist(), src_lengths[order].tolist(),
                                             tgt_lengths[order].tolist()):
        pair_longest = max(longest, src_length, tgt_length)
        if current and (len(current) + 1) * pair_longest > max_tokens:
            batches.append(current)
            current, pair_longest = [], max(src_length, tgt_length)
        current.append(index)
        longest = pair_longest
    if current:
        batches.append(current)
    return batches


def _padded(flat: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """(B, width) int64: row b holds ``flat[offsets[b]:offsets[b] + lengths[b]]`` then PAD_ID."""
    positions = np.arange(width)
    mask = positions[None, :] < lengths[:, None]
    gather = np.where(mask, offsets[:, None] + positions[None, :], 0)
    values = flat[gather].astype(np.int64) if len(flat) else np.zeros(gather.shape, dtype=np.int64)
    return np.where(mask, values, PAD_ID)


def _flatten(sequences: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter((i for s in sequences for i in s), dtype=np.int32, count=int(offsets[-1]))
    return flat, offsets


def _unflatten(flat: np.ndarray, offsets: np.ndarray) -> list[list[int]]:
    values = flat.tolist()
    bounds = offsets.tolist()
    return [values[start:end] for start, end in zip(bounds[:-1], bounds[1:])]
