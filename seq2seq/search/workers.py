"""Searching several batches at once on a CPU, each on its share of torch's threads.

A search step is a chain of small matrix products (a few hundred rows) and element-wise
operations; split over two threads, such products gain far less than twice, while two
independent batches searched side by side on one thread each keep both cores as busy as one
batch keeps one. So ``decode.workers`` searches run at once, each with
``torch.get_num_threads() // workers`` threads, taking the longest batches first. Every batch
is searched exactly as it would be alone on that many threads, so the output does not depend
on which worker took which batch.

Torch's thread count is process-wide: while the workers run, other torch work in the process
also runs on the smaller count. ``decode.workers: 1`` keeps one search at a time on all threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from ..data.batches import length_sorted_batches

Item = TypeVar("Item")
Result = TypeVar("Result")


def search_workers(setting: int, device: torch.device, num_batches: int, sampling: bool) -> int:
    """How many batches to search at once: ``setting`` (0 = one per torch thread) on a CPU, bounded by
    the threads and the batches; 1 on other devices and for sampling (its one generator draws in input order)."""
    if device.type != "cpu" or sampling:
        return 1
    threads = torch.get_num_threads()
    wanted = threads if setting == 0 else setting
    return max(1, min(wanted, threads, num_batches))


def batch_limit(batch_size: int, total_tokens: int, workers: int) -> int:
    """The tokens per batch when ``workers`` share ``total_tokens``: ``batch_size``, cut so that each
    worker gets about four batches (the last ones finish close together), but never below half of it."""
    if workers <= 1:
        return batch_size
    return max(batch_size // 2, min(batch_size, total_tokens // (4 * workers)))


def plan_batches(lengths: list[int], batch_size: int, setting: int, device: torch.device,
                 sampling: bool) -> tuple[list[list[int]], int]:
    """The length-sorted batches (indices into ``lengths``, longest first) of a search over sentences of
    ``lengths`` tokens, and how many of them to search at once (``setting`` is ``decode.workers``)."""
    batches = length_sorted_batches(lengths, batch_size)
    workers = search_workers(setting, device, len(batches), sampling)
    if workers > 1:
        batches = length_sorted_batches(lengths, batch_limit(batch_size, sum(lengths), workers))
    return batches, workers


def map_on_workers(function: Callable[[Item], Result], items: Sequence[Item], workers: int) -> list[Result]:
    """``[function(item) for item in items]``, computed by ``workers`` threads, each on its share of torch's
    threads, taking items in order (pass the largest first). The first exception raised is re-raised here."""
    if workers <= 1 or len(items) <= 1:
        return [function(item) for item in items]
    results: list[Result | None] = [None] * len(items)
    failures: list[BaseException] = []
    next_index = iter(range(len(items)))
    lock = threading.Lock()
    threads_before = torch.get_num_threads()
    share = max(1, threads_before // workers)

    def work() -> None:
        torch.set_num_threads(share)  # this thread's OpenMP team size; torch's count is process-wide
        while not failures:
            with lock:
                index = next(next_index, None)
            if index is None:
                return
            try:
                results[index] = function(items[index])
            except BaseException as error:  # noqa: BLE001 - handed to the caller below
                failures.append(error)

    torch.set_num_threads(share)  # set before the threads start, so that their first parallel region sees it
    try:
        pool = [threading.Thread(target=work, name=f"seq2seq-search-{n}", daemon=True) for n in range(workers)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    finally:
        torch.set_num_threads(threads_before)
    if failures:
        raise failures[0]
    return results  # type: ignore[return-value]
