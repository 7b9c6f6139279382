"""Encoding a split's text files into id files, in chunks, on every core.

The sentences were written one per line by the first pass (:mod:`seq2seq.data.store`).
Chunks of :data:`CHUNK_PAIRS` pairs are encoded by a pool of worker processes (forked, so
they share the loaded tokenizer), one per core, each running SentencePiece on one thread;
this process filters each encoded chunk with a few array operations and appends it to the
id files while the workers encode the next ones. Small splits are encoded here, on
SentencePiece's own threads, because starting a pool would cost more than it saves.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
from itertools import chain
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .columns import map_array
from .progress import ProgressMeter
from .store import ArrayWriter, OffsetsWriter, ids_path, text_path
from .tokenizer import Tokenizer

CHUNK_PAIRS = 20_000
PARALLEL_MIN_PAIRS = 200_000  # fewer pairs in all splits: encode in this process

# What became of each pair (line) of a split; see SplitReport.
KEPT, EMPTY, LONG, TRUNCATED = 0, 1, 2, 3

_worker_tokenizer: Tokenizer | None = None  # set before the pool forks; the workers inherit it

_Chunk = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # src ids, src lengths, tgt ids, tgt lengths


def ids_dtype(tokenizer: Tokenizer) -> np.dtype:
    """uint16 when both vocabularies fit (half the disk and page cache of int32), else int32."""
    return np.dtype(np.uint16 if max(tokenizer.src_vocab_size, tokenizer.tgt_vocab_size) <= 1 << 16 else np.int32)


def core_count() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def encode_splits(tokenizer: Tokenizer, directory: Path, lines: dict[str, int], max_length: int,
                  progress: ProgressMeter) -> dict[str, np.ndarray]:
    """Encode every split of ``directory`` (``lines`` pairs each) into its id files.

    Train drops pairs with a side over ``max_length``, dev/test truncate the source instead
    (BLEU needs every reference); a pair that encodes to nothing on a side is dropped.
    Returns, per split, the (M,) uint8 status of each pair: KEPT, EMPTY, LONG or TRUNCATED.
    """
    global _worker_tokenizer
    dtype = ids_dtype(tokenizer)
    tasks = [(str(directory), split, start, min(start + CHUNK_PAIRS, count), dtype.str)
             for split, count in lines.items() for start in range(0, count, CHUNK_PAIRS)]
    _worker_tokenizer = tokenizer
    _release_freed_memory()  # what tokenizer training freed, before the workers fork from this process
    try:
        with _ChunkResults(tasks, parallel=sum(lines.values()) >= PARALLEL_MIN_PAIRS) as results:
            return _write_all(directory, lines, tasks, results, max_length, dtype, progress)
    finally:
        _worker_tokenizer = None


class _ChunkResults:
    """Encoded chunks in task order, from a pool of forked workers or from this process."""

    def __init__(self, tasks: list[tuple[Any, ...]], parallel: bool) -> None:
        self._pool = multiprocessing.get_context("fork").Pool(core_count()) if parallel else None
        self._results: Iterator[_Chunk] = (self._pool.imap(_encode_chunk, tasks) if self._pool is not None
                                           else (_encode_chunk(task, threads=core_count()) for task in tasks))

    def __enter__(self) -> Iterator[_Chunk]:
        return self._results

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()


def _release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise); a no-op elsewhere."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _write_all(directory: Path, lines: dict[str, int], tasks: list[tuple[Any, ...]], results: Iterator[_Chunk],
               max_length: int, dtype: np.dtype, progress: ProgressMeter) -> dict[str, np.ndarray]:
    statuses: dict[str, list[np.ndarray]] = {split: [] for split in lines}
    writers: dict[str, _SplitWriters] = {}
    try:
        for (_, split, start, stop, _), chunk in zip(tasks, results):
            if split not in writers:
                writers[split] = _SplitWriters(directory, split, dtype)
            statuses[split].append(writers[split].add(chunk, start, max_length, truncate=split != "train"))
            progress.update(stop - start)
    finally:
        for item in writers.values():
            item.close()
    return {split: np.concatenate(parts) if parts else np.zeros(0, np.uint8) for split, parts in statuses.items()}


def _encode_chunk(task: tuple[Any, ...], threads: int = 1) -> _Chunk:
    """Encode lines [start, stop) of a split's text files: (src ids, src lengths, tgt ids, tgt lengths)."""
    directory, split, start, stop, dtype = task
    assert _worker_tokenizer is not None
    encoded = []
    for side, encode in (("src", _worker_tokenizer.encode_src_batch), ("tgt", _worker_tokenizer.encode_tgt_batch)):
        ids = encode(_read_lines(text_path(Path(directory), split, side), start, stop), num_threads=threads)
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        encoded += [np.fromiter(chain.from_iterable(ids), dtype=dtype, count=int(lengths.sum())), lengths]
    return encoded[0], encoded[1], encoded[2], encoded[3]


def _read_lines(path: Path, start: int, stop: int) -> list[str]:
    offsets = map_array(path.with_name(path.name + ".offsets"), np.int64)
    blob = map_array(path, np.uint8)
    return blob[int(offsets[start]):int(offsets[stop])].tobytes().decode("utf-8").split("\n")[:-1]


class _SplitWriters:
    """The id, offset and kept-line files of one split, appended chunk by chunk."""

    def __init__(self, directory: Path, split: str, dtype: np.dtype) -> None:
        self.ids = {side: ArrayWriter(ids_path(directory, split, side), dtype) for side in ("src", "tgt")}
        self.offsets = {side: OffsetsWriter(directory / f"{split}.{side}.offsets") for side in ("src", "tgt")}
        self.kept = ArrayWriter(directory / f"{split}.kept", np.int64)

    def add(self, chunk: _Chunk, start: int, max_length: int, truncate: bool) -> np.ndarray:
        """Append the kept pairs of ``chunk`` (lines from ``start``); returns the status of each pair."""
        src_ids, src_lengths, tgt_ids, tgt_lengths = chunk
        empty = (src_lengths == 0) | (tgt_lengths == 0)
        too_long = ~empty & ((src_lengths > max_length) | (tgt_lengths > max_length)) if not truncate \
            else np.zeros_like(empty)
        keep = ~empty & ~too_long
        status = np.full(len(keep), KEPT, dtype=np.uint8)
        status[empty], status[too_long] = EMPTY, LONG
        status[keep & (src_lengths > max_length)] = TRUNCATED  # dev/test only: train dropped them above
        src_starts = np.cumsum(src_lengths) - src_lengths
        position = np.arange(len(src_ids)) - np.repeat(src_starts, src_lengths)
        self.ids["src"].append(src_ids[np.repeat(keep, src_lengths) & (position < max_length)])
        self.ids["tgt"].append(tgt_ids[np.repeat(keep, tgt_lengths)])
        self.offsets["src"].add_lengths(np.minimum(src_lengths[keep], max_length))
        self.offsets["tgt"].add_lengths(tgt_lengths[keep])
        self.kept.append(start + np.flatnonzero(keep))
        return status

    def close(self) -> None:
        for writer in (*self.ids.values(), *self.offsets.values(), self.kept):
            writer.close()
