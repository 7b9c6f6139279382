"""Writing files so that readers see nothing or the whole result, and write errors that say what happened.

Everything the package writes for later (checkpoints, config.yaml, translations, exported
splits; the tokenizer and corpus caches through ``data.cache``) goes through :func:`atomic_file`:
an interrupted run, a full disk or an exception mid-write leaves the previous file (or
nothing) in place, never half of one. New files get the mode any program of the user would
give them (0666 or 0777 less the umask); a replaced file keeps its mode.

An ``-o`` target is only replaced that way when it is a regular file (or does not exist yet):
devices, FIFOs, sockets and the stream paths under /dev and /proc (``/dev/stdout``) are
written through, as a shell redirection would.

A failed write (no space left, permission denied, read-only file system) raises
:class:`StorageError` naming the file, the cause and what was kept.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, TextIO

from .errors import Seq2SeqError, StorageError

STREAM_PREFIXES = ("/dev/", "/proc/")  # /dev/stdout, /dev/fd/N, /proc/self/fd/N: streams, never replaced


class _RecordingFileIO(io.FileIO):
    """A raw file that remembers the OSError of a failed write, however deep the wrappers that report it
    (``torch.save`` turns it into ``RuntimeError: [enforce fail ...] unexpected pos``)."""

    error: OSError | None = None

    def write(self, data: Any) -> int | None:
        try:
            return super().write(data)
        except OSError as exc:
            self.error = exc
            raise


def _open_recording(fd: int, mode: str) -> tuple[IO[Any], _RecordingFileIO]:
    """``fd`` opened for writing in ``mode`` ("w" UTF-8 text with \\n line ends, or "wb"), and its raw file."""
    raw = _RecordingFileIO(fd, "w")
    buffered = io.BufferedWriter(raw)
    if mode == "wb":
        return buffered, raw
    return io.TextIOWrapper(buffered, encoding="utf-8", newline="\n"), raw


def storage_error(path: str | Path, exc: OSError, kept: str) -> StorageError:
    """A StorageError naming ``path``, the cause of ``exc`` and what was ``kept``."""
    cause = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        cause += " (free some space, then run the command again)"
    return StorageError(f"could not write {path}: {cause}; {kept}")


def current_umask() -> int:
    """The process's umask (read from /proc where possible: setting it to read it is not thread-safe)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _new_mode(path: Path) -> int:
    """The mode of the file that replaces ``path``: that of the file it replaces, else 0666 less the umask."""
    with contextlib.suppress(OSError):
        info = os.stat(path)
        if stat.S_ISREG(info.st_mode):
            return stat.S_IMODE(info.st_mode)
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """A file opened in ``mode`` ("w" for UTF-8 text with \\n line ends, "wb" for bytes) under a
    temporary name beside ``path``; on success it is flushed to disk and renamed over ``path``,
    on any exception it is removed and ``path`` is left as it was. A failed write raises
    StorageError naming ``path``."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_file mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    kept = f"the previous {path} is unchanged" if path.exists() else f"no {path.name} was written"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise storage_error(path, exc, kept) from exc
    raw: _RecordingFileIO | None = None
    body_done = False  # an OSError after the caller's writes (flush, fsync, rename) is ours
    try:
        os.fchmod(fd, _new_mode(path))  # mkstemp creates 0600
        handle, raw = _open_recording(fd, mode)
        with handle:
            yield handle
            body_done = True
            handle.flush()
            os.fsync(raw.fileno())
        os.replace(tmp_name, path)
    except BaseException as exc:
        if raw is None:
            os.close(fd)
        Path(tmp_name).unlink(missing_ok=True)
        cause = raw.error if raw is not None and raw.error is not None else exc if body_done else None
        if isinstance(cause, OSError) and not isinstance(exc, Seq2SeqError):
            raise storage_error(path, cause, kept) from exc
        raise


def writes_through(path: Path) -> bool:
    """True when ``path`` is a device, FIFO, socket or stream path, to be written in place rather than replaced."""
    if str(path).startswith(STREAM_PREFIXES):
        return True
    try:
        return not stat.S_ISREG(os.stat(path).st_mode) and not path.is_dir()
    except OSError:  # missing (or a dangling symlink): a new regular file
        return False


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[TextIO]:
    """The text stream an ``-o PATH`` option writes to.

    ``-`` is stdout. A device, FIFO, socket or stream path (``/dev/stdout``) is written through,
    appending as a shell's ``>>`` would (a device or FIFO has nothing to append to). A symlink
    is followed: the file it points to is replaced and the link kept. A regular file, or a
    new one, is written atomically. Write errors raise StorageError naming ``path``.
    """
    if str(path) == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    path = Path(path)
    if path.is_dir():
        raise Seq2SeqError(f"output path {path} is a directory; give a file name")
    if not writes_through(path):
        target = Path(os.path.realpath(path)) if path.is_symlink() else path
        with atomic_file(target, "w") as handle:
            yield handle
        return
    with _written_through(path) as handle:
        yield handle


@contextlib.contextmanager
def _written_through(path: Path) -> Iterator[TextIO]:
    """``path`` opened for appending without creating or replacing it; a failed write raises StorageError."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    except OSError as exc:
        raise storage_error(path, exc, "nothing was written") from exc
    handle, raw = _open_recording(fd, "w")
    try:
        with handle:
            yield handle  # type: ignore[misc]
    except BaseException as exc:
        if raw.error is None or isinstance(raw.error, BrokenPipeError) or isinstance(exc, Seq2SeqError):
            raise
        raise storage_error(path, raw.error, "the output stops there") from exc
