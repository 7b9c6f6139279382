"""Progress of long data work: a tqdm bar on a terminal, a plain log line every few seconds otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

logger = logging.getLogger("seq2seq.data.preparation")
LOG_EVERY_S = 30.0


class ProgressMeter:
    """Counts units (bytes or pairs) towards an optional total; quiet unless the work takes a while."""

    def __init__(self, description: str, total: int | None, unit: str, enabled: bool = True) -> None:
        self.description, self.total, self.unit, self.done = description, total, unit, 0
        self._bar: Any = None
        self._start = self._last_log = time.monotonic()
        self._enabled = enabled
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=description, unit=unit, unit_scale=True, leave=False,
                             mininterval=0.5, delay=2.0)  # no bar at all for work done within 2 s

    def update(self, amount: int) -> None:
        """Add ``amount`` units of work done."""
        self.done += amount
        if self._bar is not None:
            self._bar.update(amount)
        elif self._enabled and time.monotonic() - self._last_log >= LOG_EVERY_S:
            self._last_log = time.monotonic()
            logger.info("%s", self._line())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def _line(self) -> str:
        elapsed = time.monotonic() - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        line = f"{self.description}: {_human(self.done)}{self.unit}"
        if self.total:
            left = (self.total - self.done) / rate if rate > 0 else float("nan")
            line += f" of {_human(self.total)}{self.unit} ({self.done / self.total:.0%}), about {left:.0f} s left"
        return f"{line}, {_human(rate)}{self.unit}/s"

    def __enter__(self) -> ProgressMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _human(value: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.1f}{suffix}"
    return f"{value:.0f}"
