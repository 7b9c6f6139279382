"""Lazy, indexable views of a split on disk: sentences of a UTF-8 blob and id lists of a flat id array.

Both are read-only sequences over memory-mapped files, so a corpus of millions of pairs
costs no memory until a sentence is read, and several processes (DDP ranks) reading the
same cache share one copy through the page cache.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np


def map_array(path: Path, dtype: Any) -> np.ndarray:
    """``path`` as a read-only memory-mapped 1-D array of ``dtype`` (an empty array for an empty file)."""
    if path.stat().st_size == 0:
        return np.empty(0, dtype=dtype)  # mmap refuses empty files
    return np.memmap(path, dtype=dtype, mode="r")


class _Rows(Sequence):  # type: ignore[type-arg]
    """A sequence whose rows are computed from arrays on access; compares and concatenates like a list."""

    def __len__(self) -> int:
        raise NotImplementedError

    def _row(self, index: int) -> Any:
        raise NotImplementedError

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self._row(i) for i in range(*index.indices(len(self)))]
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} out of range for {len(self)} rows")
        return self._row(index)

    def __iter__(self) -> Iterator[Any]:
        return (self._row(i) for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    def __add__(self, other: Sequence[Any]) -> list[Any]:
        return [*self, *other]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} rows)"


class TextColumn(_Rows):
    """Sentences stored as one UTF-8 blob with one sentence per line; ``column[i]`` decodes sentence i.

    ``offsets`` (M + 1,) int64: line j is ``blob[offsets[j]:offsets[j + 1] - 1]`` (the newline
    dropped). ``rows`` (N,) maps row i to its line (the pairs kept after cleaning); None = all lines.
    """

    def __init__(self, blob: np.ndarray, offsets: np.ndarray, rows: np.ndarray | None = None) -> None:
        self._blob, self._offsets, self._rows = blob, offsets, rows

    @classmethod
    def open(cls, path: Path, rows: np.ndarray | None = None) -> TextColumn:
        """The column written by ``TextWriter`` at ``path`` (``path`` and ``path.offsets``)."""
        return cls(map_array(path, np.uint8), map_array(path.with_name(path.name + ".offsets"), np.int64), rows)

    def __len__(self) -> int:
        return len(self._offsets) - 1 if self._rows is None else len(self._rows)

    def _row(self, index: int) -> str:
        line = index if self._rows is None else int(self._rows[index])
        return self._blob[int(self._offsets[line]):int(self._offsets[line + 1]) - 1].tobytes().decode("utf-8")


class IdRows(_Rows):
    """Per-sentence id lists of one flat id array: ``rows[i] == flat[offsets[i]:offsets[i + 1]].tolist()``."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray) -> None:
        self._flat, self._offsets = flat, offsets

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def _row(self, index: int) -> list[int]:
        return self._flat[int(self._offsets[index]):int(self._offsets[index + 1])].tolist()


class LineSample:
    """Some lines of a ``TextColumn`` file, in file order, read with plain sequential reads.

    For one pass over many lines spread over a large file (the tokenizer's sample): unlike
    a memory map, reading leaves no file pages counted in this process's resident memory.
    Iterable any number of times; ``rows`` (sorted) None = every line.
    """

    def __init__(self, path: Path, rows: np.ndarray | None = None, chunk_bytes: int = 1 << 23) -> None:
        self._path, self._rows, self._chunk_bytes = path, rows, chunk_bytes
        self._count = len(map_array(path.with_name(path.name + ".offsets"), np.int64)) - 1

    def __len__(self) -> int:
        return self._count if self._rows is None else len(self._rows)

    def __iter__(self) -> Iterator[str]:
        wanted = iter(range(self._count) if self._rows is None else self._rows.tolist())
        target = next(wanted, None)
        line = 0
        rest = b""
        with self._path.open("rb") as handle:
            while target is not None and (chunk := handle.read(self._chunk_bytes)):
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                while target is not None and target - line < len(lines):
                    yield lines[target - line].decode("utf-8")
                    target = next(wanted, None)
                line += len(lines)
