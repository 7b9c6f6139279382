"""One training run per run directory: an exclusive lock held for the run's life.

The lock is ``flock`` on RUN_DIR/.lock, so the operating system releases it when the process
ends, however it ends (``kill -9`` included): a stale lock cannot outlive its run. The file
says who holds it (pid, host, start time), for the message another run gets. Under torchrun
only process 0 takes it: the other processes of the same run write nothing of their own.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import Seq2SeqError
from ..writing import storage_error

logger = logging.getLogger("seq2seq.training")

LOCK_NAME = ".lock"
STALE_TEMPORARIES = (".last.pt.*.tmp", ".best.pt.*.tmp", ".config.yaml.*.tmp")


class RunDirectoryInUse(Seq2SeqError):
    """Another training process holds the lock on the run directory."""


def is_launch_main() -> bool:
    """True in the process that owns the run directory: the only one, or process 0 under torchrun."""
    return int(os.environ.get("RANK", "0")) == 0


@contextlib.contextmanager
def hold_run_dir(run_dir: Path) -> Iterator[None]:
    """Create ``run_dir`` and hold its lock until the block ends; RunDirectoryInUse names the holder.

    Once the lock is ours, temporary files a killed run left half-written are deleted:
    nobody else can be writing them.
    """
    if not is_launch_main():
        yield
        return
    path = run_dir / LOCK_NAME
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise storage_error(path, exc, "the run did not start") from exc
    try:
        if _lock(fd, run_dir):
            _write_holder(fd)
        remove_stale_temporaries(run_dir)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays, so no other process ever locks a deleted inode


def _lock(fd: int, run_dir: Path) -> bool:
    """Take the lock without waiting; False when the file system offers no locks (the run goes on, warned)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RunDirectoryInUse(
            f"the run directory {run_dir} is in use by {holder(run_dir / LOCK_NAME)}; wait for that run to end "
            f"(or stop it), or choose another --run-dir. The lock goes with the process, even one killed "
            f"with kill -9") from None
    except OSError as exc:
        if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        logger.warning("the file system of %s offers no file locks (%s): make sure no other run uses it",
                       run_dir, exc.strerror)
        return False
    return True


def _write_holder(fd: int) -> None:
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": started}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)


def holder(path: Path) -> str:
    """Who holds the lock at ``path``, e.g. "process 4242 on host gpu1 (started 2026-11-30 05:50:00 UTC)"."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return f"process {record['pid']} on host {record['host']} (started {record['started']})"
    except (OSError, ValueError, KeyError, TypeError):  # it has just taken the lock and not yet written
        return "another process"


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporary files of checkpoint and config writes that never finished; returns them."""
    stale = [path for pattern in STALE_TEMPORARIES for path in sorted(run_dir.glob(pattern))]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        logger.info("removed %d unfinished temporary file(s) of an earlier run: %s", len(stale),
                    ", ".join(path.name for path in stale))
    return stale
