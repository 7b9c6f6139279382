"""The files of one cached corpus, written as the text streams and opened as memory-mapped arrays.

Why numpy memory maps and not Arrow (through ``datasets``): a split is nothing but a few
flat integer arrays and two UTF-8 blobs, which raw little-endian files describe exactly;
``np.memmap`` opens them in microseconds with no dependency beyond numpy, ``collate``
gathers from them with plain fancy indexing, and every process that maps them (the ranks
of a torchrun) shares one copy through the page cache. Arrow would add a 100 MB import
to every start and a conversion layer for the same bytes.

Files of split S (N kept pairs of the M non-blank pairs read):

- ``S.src.txt``/``S.tgt.txt``: the M sentences, one per line (UTF-8), with
  ``S.src.txt.offsets``/``S.tgt.txt.offsets`` (M + 1,) int64 line starts;
- ``S.kept`` (N,) int64: the line of each kept pair;
- ``S.src.ids``/``S.tgt.ids``: the ids of the kept pairs in a row (uint16 when the
  vocabulary allows, else int32), with ``S.src.offsets``/``S.tgt.offsets`` (N + 1,) int64.

``meta.json`` holds the id type, the tokenizer fingerprint and the reports; the cache
module adds ``manifest.json`` last.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import DataError
from .batches import EncodedCorpus, SplitReport
from .columns import TextColumn, map_array
from .progress import ProgressMeter
from .streaming import CorpusSource, Split, pair_blocks

META = "meta.json"
NEWLINE = 10


def text_path(directory: Path, split: str, side: str) -> Path:
    return directory / f"{split}.{side}.txt"


def ids_path(directory: Path, split: str, side: str) -> Path:
    return directory / f"{split}.{side}.ids"


class ArrayWriter:
    """Appends 1-D arrays of one dtype to a raw file."""

    def __init__(self, path: Path, dtype: Any) -> None:
        self.dtype = np.dtype(dtype)
        self._handle: BinaryIO = path.open("wb")

    def append(self, values: np.ndarray) -> None:
        self._handle.write(np.ascontiguousarray(values, dtype=self.dtype).tobytes())

    def close(self) -> None:
        self._handle.close()


class OffsetsWriter(ArrayWriter):
    """(count + 1,) int64 offsets, appended as lengths: starts at 0 and accumulates."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, np.int64)
        self.end = 0
        self.append(np.zeros(1, dtype=np.int64))

    def add_lengths(self, lengths: np.ndarray) -> None:
        ends = self.end + np.cumsum(lengths, dtype=np.int64)
        if len(ends):
            self.append(ends)
            self.end = int(ends[-1])


class TextWriter:
    """Writes sentences one per line (the ``TextColumn`` layout); a sentence holds no newline by construction."""

    def __init__(self, path: Path) -> None:
        self._blob = path.open("wb")
        self._offsets = OffsetsWriter(path.with_name(path.name + ".offsets"))

    def append(self, lines: list[str]) -> None:
        if not lines:
            return
        data = ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")
        ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == NEWLINE) + 1
        self._blob.write(data)
        self._offsets.add_lengths(np.diff(ends, prepend=0))

    def close(self) -> None:
        self._blob.close()
        self._offsets.close()


@dataclass
class CorpusLines:
    """What reading one corpus gave: its lines ``[start, stop)`` in the split's text files, and counts."""

    origin: str
    start: int
    stop: int
    read: int  # pairs read
    sha256: str  # content hash (of its files' bytes, or of its text)
    file_hashes: list[tuple[Path, str, str]] = field(default_factory=list)  # (file, sha256, identity before)


def collect_split(directory: Path, split: Split, sources: list[CorpusSource], progress: ProgressMeter,
                  identities: Callable[[Path], str]) -> list[CorpusLines]:
    """Stream every corpus of ``split`` into the split's text files, dropping pairs with a blank side.

    Raises DataError for unreadable or misaligned input and for a corpus without any pair.
    ``identities`` is called for each file before it is read (see ``cache.remember_hash``).
    """
    writers = TextWriter(text_path(directory, split, "src")), TextWriter(text_path(directory, split, "tgt"))
    corpora: list[CorpusLines] = []
    try:
        for source in sources:
            start = corpora[-1].stop if corpora else 0
            corpora.append(_collect_corpus(source, writers, start, progress, identities))
            if corpora[-1].stop == start:
                raise DataError(f"empty corpus: {split} data {source.origin} has no pair with text on both sides "
                                f"({corpora[-1].read} lines read)")
    finally:
        for writer in writers:
            writer.close()
    return corpora


def _collect_corpus(source: CorpusSource, writers: tuple[TextWriter, TextWriter], start: int,
                    progress: ProgressMeter, identities: Callable[[Path], str]) -> CorpusLines:
    digests = [hashlib.sha256() for _ in (source.files or [None])]
    before = [identities(path) for path in source.files]
    read = kept = 0
    for src, tgt in pair_blocks(source, [digest.update for digest in digests], progress.update):
        read += len(src)
        keep = [i for i, (s, t) in enumerate(zip(src, tgt)) if s.strip() and t.strip()]
        if len(keep) < len(src):
            src, tgt = [src[i] for i in keep], [tgt[i] for i in keep]
        writers[0].append(src)
        writers[1].append(tgt)
        kept += len(src)
    hashes = [digest.hexdigest() for digest in digests]
    return CorpusLines(origin=source.origin, start=start, stop=start + kept, read=read,
                       sha256=corpus_hash(source, hashes),
                       file_hashes=list(zip(source.files, hashes, before)))


def corpus_hash(source: CorpusSource, content_hashes: list[str]) -> str:
    """The cache key of one corpus: how it is read, and the hash of what was read."""
    return hashlib.sha256(json.dumps([source.format, source.options, content_hashes]).encode()).hexdigest()


def open_split(directory: Path, split: str, meta: dict[str, Any]) -> EncodedCorpus:
    """The split as an :class:`EncodedCorpus` over memory-mapped files of ``directory``."""
    dtype = np.dtype(meta["ids_dtype"])
    kept = map_array(directory / f"{split}.kept", np.int64)
    info = meta["splits"][split]
    return EncodedCorpus(
        map_array(ids_path(directory, split, "src"), dtype), map_array(directory / f"{split}.src.offsets", np.int64),
        map_array(ids_path(directory, split, "tgt"), dtype), map_array(directory / f"{split}.tgt.offsets", np.int64),
        src_text=TextColumn.open(text_path(directory, split, "src"), kept),
        tgt_text=TextColumn.open(text_path(directory, split, "tgt"), kept),
        report=SplitReport(**info["report"]),
        sources=[(item["origin"], SplitReport(**item["report"])) for item in info["corpora"]])


def write_meta(directory: Path, meta: dict[str, Any]) -> None:
    (directory / META).write_text(json.dumps(meta, indent=1), encoding="utf-8")


def read_meta(directory: Path) -> dict[str, Any]:
    return json.loads((directory / META).read_text(encoding="utf-8"))
