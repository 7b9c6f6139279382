"""The benchmark's timing helpers: interleaved windows and the figures they report."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarking import time_interleaved, warm_up
from seq2seq.data import EncodedCorpus


def _batches(count: int) -> list:
    corpus = EncodedCorpus.from_ids([[5, 6, 7]] * count * 2, [[8, 9]] * count * 2)
    return [corpus.collate(rows) for rows in corpus.batch_order(2, "sentences", shuffle=False)][:count]


def test_windows_take_turns_across_phases() -> None:
    calls: list[tuple[str, int]] = []
    batches = _batches(6)

    def recorder(name: str):
        def step(batch) -> None:
            calls.append((name, next(i for i, b in enumerate(batches) if b is batch)))
        return step

    timed = time_interleaved({"a": recorder("a"), "b": recorder("b")}, batches, windows=3, steps_per_window=2,
                             device=torch.device("cpu"))
    # Window w of every phase runs before window w + 1 of any, each on the same batches in order.
    assert calls == [("a", 0), ("a", 1), ("b", 0), ("b", 1), ("a", 2), ("a", 3), ("b", 2), ("b", 3),
                     ("a", 4), ("a", 5), ("b", 4), ("b", 5)]
    for throughput in timed.values():
        assert len(throughput.per_window) == 3 and all(rate > 0 for rate in throughput.per_window)
        # Each batch holds 2 sentences of 2 target tokens + EOS: 6 real target tokens, 12 per window.
        assert throughput.units_per_window == [12, 12, 12]


def test_too_few_batches_is_an_error() -> None:
    with pytest.raises(ValueError, match="needs 4 batches, got 3"):
        time_interleaved({"a": lambda batch: None}, _batches(3), windows=2, steps_per_window=2,
                         device=torch.device("cpu"))


BLOCK_MIB = 64  # above glibc's largest mmap threshold (32 MiB): freed, it leaves the resident set at once


def _resident_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def _touch_block() -> float:
    """Fill a BLOCK_MIB tensor (so that its pages are resident) and return the resident MiB while it lives."""
    block = torch.ones(BLOCK_MIB * 2**20 // 4)
    resident = _resident_mib()
    del block
    return resident


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="the CPU peak is read from Linux /proc")
def test_warm_up_runs_every_batch_and_reports_the_peak_of_its_own_steps() -> None:
    seen, resident = [], []

    def step(batch) -> None:
        seen.append(batch)
        resident.append(_touch_block())

    before = _resident_mib()
    peak = warm_up(step, _batches(3), torch.device("cpu"))
    after = _resident_mib()
    assert len(seen) == 3
    # The peak covers the block each step held, which is gone again afterwards ...
    assert peak >= max(resident) - 1 and peak >= after + BLOCK_MIB * 0.9
    # ... and the count started at warm_up: a no-op step peaks near where it started, below any block.
    quiet = warm_up(lambda batch: None, _batches(3), torch.device("cpu"))
    assert quiet < min(before, after) + BLOCK_MIB * 0.5
