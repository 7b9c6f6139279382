"""What the commands write to stderr: time-stamped log lines, and progress that suits where stderr goes.

On a terminal progress is a tqdm bar redrawn in place. When stderr is a file or a pipe
(a job scheduler's log, ``2> log``) the carriage-return frames of a bar would pile up
in it, so progress becomes a plain log line every ``interval`` seconds with the count,
the rate and, when the total is known, the time left.
"""

from __future__ import annotations

import gzip
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

LOG_FORMAT = "%(asctime)s %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
PROGRESS_INTERVAL = 30.0  # seconds between plain progress lines

logger = logging.getLogger("seq2seq")


def setup_logging(quiet: bool = False) -> None:
    """Log INFO (WARNING with ``quiet``) and above to stderr, each line prefixed with date and time."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format=LOG_FORMAT, datefmt=DATE_FORMAT,
                        stream=sys.stderr)


def format_duration(seconds: float) -> str:
    """``75`` -> ``'1m15s'``, ``3725`` -> ``'1h02m'``, ``9`` -> ``'9s'``."""
    seconds = max(int(seconds), 0)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def rate_and_eta(done: float, elapsed: float, total: float | None, unit: str) -> str:
    """``'120 lines/s, 1m15s left'``: the mean rate so far and, when ``total`` is known, the time to reach it."""
    rate = done / max(elapsed, 1e-9)
    text = f"{rate:,.1f} {unit}/s" if rate < 100 else f"{rate:,.0f} {unit}/s"
    if total and rate > 0:
        text += f", {format_duration((total - done) / rate)} left"
    return text


def progress(items: Iterable[T], *, desc: str, unit: str, total: int | None = None,
             interval: float = PROGRESS_INTERVAL) -> Iterator[T]:
    """Yield ``items`` unchanged while showing progress on stderr: a bar on a terminal, plain lines otherwise.

    >>> list(progress([1, 2, 3], desc="demo", unit="items"))
    [1, 2, 3]
    """
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(items, desc=desc, unit=f" {unit}", total=total, file=sys.stderr, mininterval=1.0)
        return
    start = last = time.perf_counter()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.perf_counter()
        if now - last >= interval:
            last = now
            of_total = f" of {total:,}" if total else ""
            logger.info("%s: %s%s %s | %s", desc, f"{done:,}", of_total, unit,
                        rate_and_eta(done, now - start, total, unit))
    elapsed = time.perf_counter() - start
    logger.info("%s: %s %s in %s | %s", desc, f"{done:,}", unit, format_duration(elapsed),
                rate_and_eta(done, elapsed, None, unit))


def count_lines(path: str | Path) -> int:
    """Lines in a text file, gzipped or not (a last line without a newline counts), read in binary chunks."""
    opener = gzip.open if str(path).endswith(".gz") else open
    count, last = 0, b"\n"
    with opener(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")
