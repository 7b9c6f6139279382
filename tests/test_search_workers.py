"""decode.workers: batches searched side by side on a CPU, each on its share of torch's threads."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from seq2seq import Translator
from seq2seq.errors import ConfigError
from seq2seq.search.workers import batch_limit, map_on_workers, search_workers


@pytest.fixture
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def test_map_on_workers_runs_items_side_by_side_on_one_thread_each_and_keeps_their_order(two_threads):
    both_started = threading.Barrier(2, timeout=30)  # the first two items wait for each other: proof of overlap
    seen: list[tuple[str, int]] = []

    def square(item: int) -> int:
        if item < 2:
            both_started.wait()
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return item * item

    assert map_on_workers(square, list(range(9)), workers=2) == [n * n for n in range(9)]
    assert {name for name, _ in seen} == {"seq2seq-search-0", "seq2seq-search-1"}
    assert {threads for _, threads in seen} == {1}
    assert torch.get_num_threads() == 2  # restored for the caller


def test_map_on_workers_hands_back_the_first_failure_and_restores_the_threads(two_threads):
    def fail_on_three(item: int) -> int:
        if item == 3:
            raise ValueError("item 3 is bad")
        return item

    with pytest.raises(ValueError, match="item 3 is bad"):
        map_on_workers(fail_on_three, list(range(6)), workers=2)
    assert torch.get_num_threads() == 2


def test_one_worker_or_one_item_runs_in_the_calling_thread():
    names: list[str] = []
    map_on_workers(lambda item: names.append(threading.current_thread().name), [1, 2, 3], workers=1)
    map_on_workers(lambda item: names.append(threading.current_thread().name), [1], workers=2)
    assert set(names) == {threading.current_thread().name}


def test_search_workers_is_one_per_thread_on_a_cpu_bounded_by_threads_and_batches(two_threads):
    cpu = torch.device("cpu")
    assert search_workers(0, cpu, num_batches=10, sampling=False) == 2
    assert search_workers(1, cpu, num_batches=10, sampling=False) == 1
    assert search_workers(8, cpu, num_batches=10, sampling=False) == 2  # never more searches than threads
    assert search_workers(0, cpu, num_batches=1, sampling=False) == 1
    assert search_workers(0, cpu, num_batches=10, sampling=True) == 1  # one generator draws in input order
    assert search_workers(0, torch.device("cuda"), num_batches=10, sampling=False) == 1


def test_batch_limit_gives_each_worker_several_batches_but_never_less_than_half_the_budget():
    assert batch_limit(4000, total_tokens=100_000, workers=2) == 4000
    assert batch_limit(4000, total_tokens=20_000, workers=2) == 2500
    assert batch_limit(4000, total_tokens=500, workers=2) == 2000
    assert batch_limit(4000, total_tokens=500, workers=1) == 4000


SENTENCES = [" ".join(["ein Hund läuft im Park mit der Frau ."] * (1 + n % 4)) for n in range(24)]


@pytest.mark.parametrize("beam_size", [1, 3])
def test_translating_with_two_workers_equals_one_search_at_a_time(tiny_checkpoint: Path, two_threads,
                                                                  monkeypatch, beam_size: int):
    translator = Translator.from_checkpoint(tiny_checkpoint, device="cpu")
    searched_in: list[str] = []
    search_ids = translator.search_ids

    def recording(*args, **kwargs):
        searched_in.append(threading.current_thread().name)
        return search_ids(*args, **kwargs)

    monkeypatch.setattr(translator, "search_ids", recording)
    options = {"beam_size": beam_size, "nbest": beam_size, "batch_size": 40}
    side_by_side = list(translator.translate_lines(enumerate(SENTENCES, 1), translator.decode_options(options),
                                                   return_attention=True))
    assert set(searched_in) == {"seq2seq-search-0", "seq2seq-search-1"}
    torch.set_num_threads(1)
    one_at_a_time = list(translator.translate_lines(enumerate(SENTENCES, 1),
                                                    translator.decode_options({**options, "workers": 1}),
                                                    return_attention=True))
    for together, alone in zip(side_by_side, one_at_a_time, strict=True):
        assert together.number == alone.number
        assert [t.text for t in together.nbest] == [t.text for t in alone.nbest]
        assert [t.score for t in together.nbest] == pytest.approx([t.score for t in alone.nbest], abs=1e-5)
        for a, b in zip(together.nbest, alone.nbest):
            torch.testing.assert_close(a.attention, b.attention, atol=1e-5, rtol=0)


def test_a_negative_worker_count_is_refused_naming_the_key(tiny_checkpoint: Path):
    translator = Translator.from_checkpoint(tiny_checkpoint, device="cpu")
    with pytest.raises(ConfigError, match="decode.workers"):
        translator.decode_options({"workers": -1})
