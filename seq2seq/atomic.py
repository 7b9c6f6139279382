"""Writing files and directories so that readers see either nothing or the whole result.

Everything the package writes for later (checkpoints, translations, tokenizer and corpus
caches, exported splits) goes through here: an interrupted run, a full disk or an
exception mid-write leaves the previous file (or nothing) in place, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Callable


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """A file opened in ``mode`` ("w" for UTF-8 text with \\n line ends, "wb" for bytes) under a
    temporary name beside ``path``; on success it is flushed to disk and renamed over ``path``,
    on any exception it is removed and ``path`` is left as it was."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_file mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        text = {"encoding": "utf-8", "newline": "\n"} if mode == "w" else {}
        with os.fdopen(fd, mode, **text) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_atomically(directory: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp_dir)`` on a fresh temporary directory, then rename it to ``directory``.

    Readers therefore see either nothing or the complete directory. If another process
    finished the same directory first, its copy is kept and ours is discarded.
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        write(tmp)
        os.rename(tmp, directory)
    except OSError:
        if not directory.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
