"""Throughput measurement for ``scripts/benchmark.py``: steady-state timing windows, peak memory,
the token batch size that gives a chosen number of real target tokens per batch, and the
package's own training step and searches wrapped as callables that take one :class:`Batch`.

Every training figure counts *real* target tokens (EOS included, padding excluded) per
second of wall time, measured after warm-up steps, as the median over several windows, so
that one slow window (another process on a shared CPU, a garbage collection) does not
decide the result.
"""

from __future__ import annotations

import ctypes
import datetime
import gc
import platform
import shlex
import statistics
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from flops import now
from seq2seq.config import Config, DecodeConfig
from seq2seq.data import Batch, EncodedCorpus
from seq2seq.search.workers import map_on_workers, plan_batches
from seq2seq.device import AmpSettings
from seq2seq.model import Seq2Seq
from seq2seq.search import search
from seq2seq.training.distributed import DistContext
from seq2seq.training.loss import Objective
from seq2seq.training.step import build_optimizer, train_step

MIB = 1024 * 1024


@dataclass(frozen=True)
class MachineInfo:
    """What a benchmark figure depends on besides the code: printed at the top of every table."""

    date: str
    device: str
    cpu_model: str
    gpu_model: str  # empty on the CPU
    torch_version: str
    threads: int
    command: str


def describe_machine(device: torch.device, argv: list[str]) -> MachineInfo:
    """The date, device, CPU model (from /proc/cpuinfo), GPU name, torch version, threads and command line."""
    gpu_model = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    return MachineInfo(date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"), device=str(device),
                       cpu_model=cpu_model(), gpu_model=gpu_model, torch_version=torch.__version__,
                       threads=torch.get_num_threads(), command=shlex.join([sys.executable, *argv]))


def cpu_model() -> str:
    """The 'model name' line of /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a clock reading covers it; a no-op on the CPU, where work is synchronous."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: max allocated on CUDA; on the CPU the process's VmHWM, reset by /proc/self/clear_refs."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    _release_free_heap()
    try:
        # "5" resets the peak resident set size (VmHWM) to the current one (Linux >= 4.0).
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # the peak then covers the whole process so far: still an upper bound


def _release_free_heap() -> None:
    """Give freed heap pages back to the OS (glibc ``malloc_trim``) before a phase's peak is reset.

    This only lowers the starting point: glibc raises its mmap threshold as large blocks are
    freed, so later phases allocate more from the heap, which keeps freed pages resident until
    the next trim, and their peak RSS reads higher than that of the same work in a fresh
    process. (Pinning the threshold with mallopt avoids that, but makes every large tensor an
    mmap/munmap pair and training several times slower.) On CUDA the figure is exact.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc


def peak_memory_mib(device: torch.device) -> float:
    """The peak since :func:`reset_peak_memory`, in MiB: max allocated on CUDA, VmHWM (peak RSS) on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / MIB
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / MIB  # reported in kB
    except OSError:
        pass
    return float("nan")


class GpuUtilisation:
    """Samples ``nvidia-smi`` GPU utilisation in a thread while the ``with`` block runs (CUDA only, optional).

    ``mean`` is None when there is no GPU, no ``nvidia-smi``, or no sample came back.
    """

    def __init__(self, device: torch.device, interval_s: float = 0.25) -> None:
        self.device = device
        self.interval_s = interval_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuUtilisation:
        if self.device.type == "cuda":
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._take_sample()  # covers the block's last moments, and blocks shorter than one interval

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.samples) if self.samples else None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s) and self._take_sample():
            pass

    def _take_sample(self) -> bool:
        """Append one reading; False when there is no nvidia-smi (or it failed): utilisation is optional."""
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        command = ["nvidia-smi", f"--id={index}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=5, check=True).stdout
            self.samples.append(float(out.strip().splitlines()[0]))
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return False
        return True


@dataclass
class Throughput:
    """Units (real target tokens, or sentences) per second of each timed window, and the peak memory in MiB."""

    per_window: list[float]
    peak_memory_mib: float
    units_per_window: list[int] = field(default_factory=list)
    gpu_utilisation: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.per_window)


def warm_up(step: Callable[[Batch], Any], batches: list[Batch], device: torch.device) -> float:
    """Run ``step`` on ``batches`` untimed (allocator pools, kernel selection, first-call costs) and return
    the peak memory in MiB seen while they ran."""
    reset_peak_memory(device)
    for batch in batches:
        step(batch)
    synchronize(device)
    return peak_memory_mib(device)


def time_interleaved(steps: dict[str, Callable[[Batch], Any]], batches: list[Batch], *, windows: int,
                     steps_per_window: int, device: torch.device) -> dict[str, Throughput]:
    """Time ``windows`` windows of ``steps_per_window`` batches for every step function, round-robin.

    Window w of every phase runs before window w + 1 of any, so a slow spell on a shared
    machine falls on all phases alike: the ratios between phases hold even when the
    absolute figures drift (timing the phases one after another let a noisy minute decide
    a ratio). Every phase sees the same ``batches`` in the same order; each window's figure
    is its real target tokens over its wall time, with the device synchronised only at the
    window edges. Warm the phases up first (:func:`warm_up`); ``peak_memory_mib`` is left
    NaN for the caller to fill in from the warm-up.
    """
    needed = windows * steps_per_window
    if len(batches) < needed:
        raise ValueError(f"time_interleaved needs {needed} batches, got {len(batches)}")
    rates: dict[str, list[float]] = {name: [] for name in steps}
    utilisation: dict[str, list[float]] = {name: [] for name in steps}
    units: list[int] = []
    for w in range(windows):
        window = batches[w * steps_per_window: (w + 1) * steps_per_window]
        tokens = sum(batch.num_tgt_tokens for batch in window)
        units.append(tokens)
        for name, step in steps.items():
            with GpuUtilisation(device) as sampler:
                synchronize(device)
                start = now()
                for batch in window:
                    step(batch)
                synchronize(device)
                elapsed = now() - start
            rates[name].append(tokens / elapsed)
            if sampler.mean is not None:
                utilisation[name].append(sampler.mean)
    return {name: Throughput(per_window=rates[name], peak_memory_mib=float("nan"), units_per_window=units,
                             gpu_utilisation=statistics.fmean(utilisation[name]) if utilisation[name] else None)
            for name in steps}


@dataclass(frozen=True)
class BatchSize:
    """A token batch size (``train.batch_size`` with ``batch_by: tokens``) and what it gives on a corpus."""

    max_tokens: int
    mean_tgt_tokens: float  # real target tokens per batch, EOS included, averaged over one epoch
    num_batches: int


def batch_size_for(corpus: EncodedCorpus, tgt_tokens: float, seed: int = 0) -> BatchSize:
    """The token batch size whose batches hold on average about ``tgt_tokens`` real target tokens.

    ``batch_order`` bounds a batch by sentences x max(source, target + 1) length, padding
    included, so the real target tokens per batch grow with the bound but not in proportion;
    a bisection over the bound finds the closest one.
    """
    if tgt_tokens < 1:
        raise ValueError(f"tgt_tokens must be at least 1, got {tgt_tokens}")
    total = int(corpus.tgt_lengths.sum()) + len(corpus)

    def measure(max_tokens: int) -> BatchSize:
        num_batches = len(corpus.batch_order(max_tokens, "tokens", shuffle=True, seed=seed, epoch=0))
        return BatchSize(max_tokens=max_tokens, mean_tgt_tokens=total / num_batches, num_batches=num_batches)

    low, high = 1, max(2, int(4 * tgt_tokens))
    while measure(high).mean_tgt_tokens < tgt_tokens and high < 1 << 24:
        high *= 2
    while high - low > 1:
        middle = (low + high) // 2
        if measure(middle).mean_tgt_tokens < tgt_tokens:
            low = middle
        else:
            high = middle
    return min(measure(low), measure(high), key=lambda b: abs(b.mean_tgt_tokens - tgt_tokens))


def training_batches(corpus: EncodedCorpus, max_tokens: int, count: int, device: torch.device,
                     seed: int = 0) -> list[Batch]:
    """``count`` batches of epoch 0's shuffled order (as training draws them), on ``device``; wraps if needed."""
    order = corpus.batch_order(max_tokens, "tokens", shuffle=True, seed=seed, epoch=0)
    return [corpus.collate(order[i % len(order)]).to(device) for i in range(count)]


@dataclass
class PackageTrainer:
    """The package's model and its training step (``seq2seq.training.step.train_step``) on one batch at a time."""

    model: torch.nn.Module
    step: Callable[[Batch], Tensor]


def package_trainer(cfg: Config, src_vocab_size: int, tgt_vocab_size: int, device: torch.device,
                    amp: AmpSettings) -> PackageTrainer:
    """Build the Seq2Seq of ``cfg.model`` with the optimizer and loss ``train`` uses; ``step(batch)`` is one update.

    The step is :func:`seq2seq.training.step.train_step` itself (autocast, label-smoothed loss,
    backward, clipping, fused Adam), so the figure is that of the training loop minus its
    logging and validation. The learning rate stays at ``train.lr``.
    """
    torch.manual_seed(cfg.train.seed)
    model = Seq2Seq.from_config(cfg.model, src_vocab_size, tgt_vocab_size).to(device).train()
    objective = Objective(model, cfg.train.label_smoothing, cfg.train.teacher_forcing)
    optimizer = build_optimizer(model, cfg.train)
    scaler = torch.amp.GradScaler(device.type, enabled=amp.use_scaler)
    ctx = DistContext(device=device)

    def step(batch: Batch) -> Tensor:
        return train_step(objective, optimizer, scaler, [batch], batch.num_tgt_tokens, cfg.train.lr, cfg.train,
                          amp, ctx)

    return PackageTrainer(model=model, step=step)


def decoding_batches(corpus: EncodedCorpus, decode: DecodeConfig, device: torch.device,
                     limit: int | None = None) -> tuple[list[Batch], int]:
    """The test sentences batched as ``seq2seq translate`` batches them (``plan_batches``: longest first,
    at most ``decode.batch_size`` padded source tokens per batch, smaller where ``decode.workers``
    search side by side), and how many batches it searches at once on ``device``.

    ``limit`` keeps an evenly spread subset (every k-th sentence), so its lengths resemble the whole set's.
    """
    indices = list(range(len(corpus)))
    if limit is not None and limit < len(corpus):
        stride = len(corpus) / limit
        indices = [int(i * stride) for i in range(limit)]
    subset = EncodedCorpus.from_ids([corpus.src_ids[i] for i in indices], [corpus.tgt_ids[i] for i in indices])
    order, workers = plan_batches([int(n) for n in subset.src_lengths], decode.batch_size, decode.workers, device,
                                  sampling=False)
    return [subset.collate(rows).to(device) for rows in order], workers


@dataclass
class DecodeThroughput:
    """One search over the test batches: sentences per second of search time, output tokens, peak memory (MiB)."""

    sents_per_s: float
    seconds: float
    sentences: int
    output_tokens: int
    peak_memory_mib: float
    flops: float = float("nan")  # the model FLOPs of one search over the batches (flops.py)
    batches: int = 0
    workers: int = 1  # batches searched at once (decode.workers)


def time_decoding(model: torch.nn.Module, batches: list[Batch], options: DecodeConfig,
                  device: torch.device, workers: int = 1) -> DecodeThroughput:
    """Time ``seq2seq.search.search`` (greedy for beam size 1, else beam; in the precision ``options.amp``
    gives) over the batches, ``workers`` at a time: search time only, as ``seq2seq translate`` runs it.

    The first batch runs once untimed as warm-up; collation and copies happen before the clock starts.
    """
    model.eval()
    reset_peak_memory(device)
    search(model, batches[0].src_ids, batches[0].src_lengths, options)
    synchronize(device)
    start = now()
    hypotheses = map_on_workers(lambda batch: search(model, batch.src_ids, batch.src_lengths, options),
                                batches, workers)
    synchronize(device)
    seconds = now() - start
    sentences = sum(len(batch) for batch in batches)
    output_tokens = sum(len(nbest[0].tgt_ids) + 1 for batch_hypotheses in hypotheses for nbest in batch_hypotheses)
    return DecodeThroughput(sents_per_s=sentences / seconds, seconds=seconds, sentences=sentences,
                            output_tokens=output_tokens, peak_memory_mib=peak_memory_mib(device),
                            batches=len(batches), workers=workers)


def reencode(corpus: EncodedCorpus, tokenizer: Any, max_length: int) -> EncodedCorpus:
    """The pairs of ``corpus`` encoded again from their text with ``tokenizer`` (a checkpoint's own), sources
    cut to ``max_length`` subwords as ``prepare`` cuts dev and test sources."""
    src_ids = [ids[:max_length] for ids in tokenizer.encode_src_batch(list(corpus.src_text))]
    tgt_ids = tokenizer.encode_tgt_batch(list(corpus.tgt_text))
    return EncodedCorpus.from_ids(src_ids, tgt_ids, list(corpus.src_text), list(corpus.tgt_text))
