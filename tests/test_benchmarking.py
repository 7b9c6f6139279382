"""The benchmark's timing helpers: interleaved windows and the figures they report."""

from __future__ import annotations

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


def test_warm_up_runs_every_batch_and_reads_peak_memory() -> None:
    seen = []
    peak = warm_up(seen.append, _batches(3), torch.device("cpu"))
    assert len(seen) == 3
    assert peak > 0
