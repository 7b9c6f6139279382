"""Encoded corpora and their batches: length bucketing and padding, for training and translation alike.

An :class:`EncodedCorpus` holds one split as flat int32 id arrays with offsets.
:meth:`EncodedCorpus.batch_order` buckets pairs by length so that batches carry little
padding; :meth:`EncodedCorpus.collate` builds the tensors of one :class:`Batch`.
:func:`length_sorted_batches` and :func:`pad_ids` do the same for the sources a
translation request brings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ..ids import BOS_ID, EOS_ID, PAD_ID
from .columns import IdRows


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

    ``src_ids``/``tgt_ids`` are sequences of id lists, built on access; ``src_text``/``tgt_text``
    are indexable sequences of the raw strings (the references BLEU is computed against).
    Internally each side is one flat id array with offsets (memory-mapped when the corpus
    comes from the cache), so :meth:`collate` builds a batch with a few array ops and only
    the lengths live in memory.
    """

    def __init__(self, src_flat: np.ndarray, src_offsets: np.ndarray, tgt_flat: np.ndarray,
                 tgt_offsets: np.ndarray, src_text: Sequence[str], tgt_text: Sequence[str],
                 report: SplitReport | None = None,
                 sources: Sequence[tuple[str, SplitReport]] = ()) -> None:
        """``*_flat`` hold the ids of all sentences in a row; sentence i is ``flat[offsets[i]:offsets[i+1]]``.

        ``sources`` holds the report of each corpus the split was read from, when there are several.
        """
        if not (len(src_offsets) == len(tgt_offsets) == len(src_text) + 1 == len(tgt_text) + 1):
            raise ValueError("EncodedCorpus: ids and texts must describe the same number of pairs")
        # asarray: a memory-mapped int64 array stays mapped instead of being copied into memory.
        self._src_flat, self._src_offsets = src_flat, np.asarray(src_offsets, dtype=np.int64)
        self._tgt_flat, self._tgt_offsets = tgt_flat, np.asarray(tgt_offsets, dtype=np.int64)
        self.src_lengths = np.diff(self._src_offsets)  # (N,) int64
        self.tgt_lengths = np.diff(self._tgt_offsets)  # (N,) int64, without EOS
        self.src_text = src_text
        self.tgt_text = tgt_text
        self.report = report or SplitReport(read=len(src_text), dropped_empty=0, dropped_long=0, truncated=0)
        self.sources = list(sources)

    @classmethod
    def from_ids(cls, src_ids: list[list[int]], tgt_ids: list[list[int]], src_text: list[str] | None = None,
                 tgt_text: list[str] | None = None, report: SplitReport | None = None) -> EncodedCorpus:
        """Build from per-sentence id lists (texts default to empty strings, e.g. in tests)."""
        if len(src_ids) != len(tgt_ids):
            raise ValueError(f"EncodedCorpus: {len(src_ids)} sources but {len(tgt_ids)} targets")
        src_flat, src_offsets = flatten(src_ids)
        tgt_flat, tgt_offsets = flatten(tgt_ids)
        return cls(src_flat, src_offsets, tgt_flat, tgt_offsets, src_text or [""] * len(src_ids),
                   tgt_text or [""] * len(tgt_ids), report)

    def __len__(self) -> int:
        return len(self.src_lengths)

    @property
    def src_ids(self) -> IdRows:
        """``src_ids[i]``: the source ids of pair i as a list (read from the flat array on access)."""
        return IdRows(self._src_flat, self._src_offsets)

    @property
    def tgt_ids(self) -> IdRows:
        """``tgt_ids[i]``: the target ids of pair i as a list."""
        return IdRows(self._tgt_flat, self._tgt_offsets)

    def arrays(self) -> dict[str, np.ndarray]:
        """The flat arrays, as the cache stores them."""
        return {"src_flat": self._src_flat, "src_offsets": self._src_offsets,
                "tgt_flat": self._tgt_flat, "tgt_offsets": self._tgt_offsets}

    def batch_order(self, max_tokens: int, by: Literal["tokens", "sentences"] = "tokens", shuffle: bool = True,
                    seed: int = 0, epoch: int = 0) -> list[list[int]]:
        """Batches of pair indices for one epoch, covering every pair exactly once.

        Pairs are sorted by source length, then target length (ties broken at random
        when ``shuffle``), and cut into consecutive runs, so each batch holds pairs of
        about the same lengths and little padding. Within a batch, longest target first: the
        decoder's loop drops rows whose targets have ended without reordering them. With ``by="tokens"`` a batch's cost
        is ``n_sentences * max(longest source, longest target + 1)`` and stays within
        ``max_tokens`` (a single pair above it gets a batch of its own); with
        ``by="sentences"`` a batch has ``max_tokens`` pairs. The order of the batches is
        shuffled too. The result depends only on (seed, epoch) and the corpus.
        """
        return [batch.tolist() for batch in self.batch_arrays(max_tokens, by, shuffle, seed, epoch)]

    def batch_arrays(self, max_tokens: int, by: Literal["tokens", "sentences"] = "tokens", shuffle: bool = True,
                     seed: int = 0, epoch: int = 0) -> list[np.ndarray]:
        """:meth:`batch_order` as int64 arrays, views of one (N,) array: an epoch of millions of pairs
        costs 8 bytes a pair instead of a Python int object each."""
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
        rng = np.random.default_rng([seed, epoch]) if shuffle else None
        tie_break = rng.permutation(len(self)) if rng is not None else np.arange(len(self))
        order = _length_order(self.src_lengths, self.tgt_lengths, tie_break)
        if by == "tokens":
            bounds = _token_bounds(order, self.src_lengths, self.tgt_lengths + 1, max_tokens)
        elif by == "sentences":
            bounds = [*range(0, len(order), max_tokens), len(order)]
        else:
            raise ValueError(f"by must be 'tokens' or 'sentences', got {by!r}")
        order = _longest_target_first(order, bounds, self.tgt_lengths)
        batches = [order[begin:end] for begin, end in zip(bounds[:-1], bounds[1:])]
        if rng is not None:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def collate(self, indices: list[int] | np.ndarray,
                resegment: Callable[[list[int]], tuple[list[list[int]], list[list[int]]]] | None = None) -> Batch:
        """The padded tensors of the pairs ``indices`` (in that order); see :class:`Batch`.

        ``resegment`` (subword regularisation in training) gives other ids for those pairs: the
        batch is then built from them instead of the stored ones.
        """
        rows = np.asarray(indices, dtype=np.int64)
        if rows.size == 0:
            raise ValueError("collate needs at least one index")
        if resegment is not None:
            batch = EncodedCorpus.from_ids(*resegment(rows.tolist())).collate(np.arange(len(rows)))
            return dataclasses.replace(batch, indices=rows.tolist())
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


def padding_ratio(corpus: EncodedCorpus, batches: Sequence[Sequence[int] | np.ndarray]) -> float:
    """Share of pad positions in the source and target tensors of ``batches`` (lists or arrays of pair
    indices; targets count EOS as real)."""
    parts = [np.asarray(batch, dtype=np.int64) for batch in batches if len(batch)]
    if not parts:
        return 0.0
    sizes = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
    indices = np.concatenate(parts)
    starts = np.cumsum(sizes) - sizes
    src_lengths = corpus.src_lengths[indices]
    tgt_lengths = corpus.tgt_lengths[indices] + 1
    real = int(src_lengths.sum() + tgt_lengths.sum())
    padded = int((sizes * (np.maximum.reduceat(src_lengths, starts) + np.maximum.reduceat(tgt_lengths, starts))).sum())
    return 1.0 - real / padded if padded else 0.0


def _length_order(src_lengths: np.ndarray, tgt_lengths: np.ndarray, tie_break: np.ndarray) -> np.ndarray:
    """``np.lexsort((tie_break, tgt_lengths, src_lengths))`` for a permutation ``tie_break``, computed as
    one argsort of distinct int64 keys when they fit (about twice as fast on millions of pairs)."""
    count = len(src_lengths)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    tgt_span = int(tgt_lengths.max()) + 1
    if (int(src_lengths.max()) + 1) * tgt_span * count >= 1 << 62:
        return np.lexsort((tie_break, tgt_lengths, src_lengths))
    keys = (src_lengths.astype(np.int64) * tgt_span + tgt_lengths) * count + tie_break
    return np.argsort(keys)  # distinct keys: no tie for the sort algorithm to break


def _longest_target_first(order: np.ndarray, bounds: list[int], tgt_lengths: np.ndarray) -> np.ndarray:
    """``order`` with each run ``order[bounds[i]:bounds[i + 1]]`` sorted by target length, longest first
    (stable: ties keep their order), in one argsort over all pairs."""
    if len(order) == 0:
        return order
    run_of = np.repeat(np.arange(len(bounds) - 1, dtype=np.int64), np.diff(bounds))
    lengths = tgt_lengths[order].astype(np.int64)
    span = int(lengths.max()) + 1
    return order[np.argsort(run_of * span + (span - 1 - lengths), kind="stable")]


def _token_bounds(order: np.ndarray, src_lengths: np.ndarray, tgt_lengths: np.ndarray, max_tokens: int) -> list[int]:
    """Where to cut ``order`` into consecutive runs whose ``n * max(src, tgt)`` stays within ``max_tokens``
    (0, the end of each run, and len(order) last).

    Greedy: a run grows while the next pair fits. Its cost ``(k + 1) * max(longest of the first
    k + 1 pairs)`` never falls as k grows, so each run ends at the first k where the cost
    exceeds ``max_tokens``; that k is found with array operations over a window that must
    contain it (at most ``max_tokens // longest of the first pair + 2`` pairs), one window per
    batch instead of one Python step per pair.
    """
    longest = np.maximum(src_lengths[order], tgt_lengths[order])
    bounds = [0]
    start = 0
    while start < len(order):
        window = longest[start:start + max_tokens // max(int(longest[start]), 1) + 2]
        costs = np.maximum.accumulate(window) * np.arange(1, len(window) + 1)
        over = np.flatnonzero(costs[1:] > max_tokens)
        start += int(over[0]) + 1 if len(over) else len(window)
        bounds.append(start)
    return bounds


def _padded(flat: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """(B, width) int64: row b holds ``flat[offsets[b]:offsets[b] + lengths[b]]`` then PAD_ID."""
    positions = np.arange(width)
    mask = positions[None, :] < lengths[:, None]
    gather = np.where(mask, offsets[:, None] + positions[None, :], 0)
    values = flat[gather].astype(np.int64) if len(flat) else np.zeros(gather.shape, dtype=np.int64)
    return np.where(mask, values, PAD_ID)


def flatten(sequences: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Id lists -> one flat int32 array and (N + 1,) int64 offsets: sentence i is flat[offsets[i]:offsets[i+1]]."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter((i for s in sequences for i in s), dtype=np.int32, count=int(offsets[-1]))
    return flat, offsets


def length_sorted_batches(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Indices of the non-empty sentences, longest first, cut into batches of at most max_tokens padded tokens.

    A batch holds n sentences of at most the first one's length L, so its padded size is
    n * L; a single sentence longer than max_tokens still gets a batch of its own.
    """
    order = sorted((i for i, length in enumerate(lengths) if length > 0), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for index in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= max_tokens:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


def pad_ids(sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Id lists -> ids (B, longest) int64 padded with PAD_ID, and lengths (B,) int64 on the CPU."""
    flat, offsets = flatten(sequences)
    lengths = np.diff(offsets)
    ids = _padded(flat, offsets[:-1], lengths, int(lengths.max()) if len(lengths) else 0)
    return torch.from_numpy(ids), torch.from_numpy(lengths)
