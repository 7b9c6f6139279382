"""Model FLOPs by hand and the CPU's matrix-product peak, for scripts/benchmark.py.

Every matrix product the configured model needs counts 2·m·n·k; element-wise work (gates,
tanh, softmax) counts nothing. Counts are per *real* token (padding is overhead, not work):

- per source token: the encoder GRU's input and recurrent products, per layer and direction,
  and the attention's key projection;
- per target token: the decoder GRU's input and recurrent products per layer, the attention
  query projection, the readout and the vocabulary projection;
- per (target token, source token) pair of a sentence: the attention score and the context sum.

A training step costs three times the forward (the backward computes a gradient for each
operand of every product). A search step costs the forward of one decoder step per hypothesis.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

from seq2seq.config import ModelConfig

PEAK_SIZE = 2048  # a square fp32 matmul this large runs at the BLAS kernel's steady-state speed


@dataclass(frozen=True)
class FlopCount:
    """Forward FLOPs: per source token, per target token (or search step of one hypothesis), per attended pair."""

    per_src_token: float
    per_tgt_token: float
    per_pair: float

    def forward(self, src_tokens: float, tgt_tokens: float, pairs: float) -> float:
        return self.per_src_token * src_tokens + self.per_tgt_token * tgt_tokens + self.per_pair * pairs


def _gru(inputs: int, hidden: int) -> float:
    """One GRU layer and direction for one token: input product (3H x in) and recurrent product (3H x H)."""
    return 2.0 * 3 * hidden * (inputs + hidden)


def count_flops(cfg: ModelConfig, tgt_vocab_size: int) -> FlopCount:
    """The forward FLOPs of the configured model (see the module docstring for what counts)."""
    directions = 2 if cfg.bidirectional else 1
    context = directions * cfg.hidden_size
    encoder = sum(directions * _gru(cfg.embedding_size if layer == 0 else context, cfg.hidden_size)
                  for layer in range(cfg.num_layers))
    hd, e = cfg.decoder_hidden_size, cfg.embedding_size
    keys = {"bahdanau": 2.0 * context * hd, "luong_general": 2.0 * context * hd}.get(cfg.attention, 0.0)
    gru_in = e + (context if cfg.attention == "bahdanau" or cfg.context_every_step else 0)
    gru_in += e if cfg.input_feeding else 0
    decoder = sum(_gru(gru_in if layer == 0 else hd, hd) for layer in range(cfg.num_layers))
    query = 2.0 * hd * hd if cfg.attention == "bahdanau" else 0.0
    uses_context = cfg.attention != "none" or cfg.context_every_step
    readout = 2.0 * (hd + (context if uses_context else 0) + e) * e
    output = 2.0 * e * tgt_vocab_size
    # Bahdanau: v^T tanh(.) over A = Hd per pair; Luong: a dot product of width Hd; then the context sum of width C.
    pair = 0.0 if cfg.attention == "none" else 2.0 * hd + 2.0 * context
    return FlopCount(per_src_token=encoder + keys, per_tgt_token=decoder + query + readout + output, per_pair=pair)


def batch_work(src_lengths: torch.Tensor, tgt_lengths: torch.Tensor) -> tuple[float, float, float]:
    """Real source tokens, target tokens and attended (target, source) pairs of a batch, from its lengths (B,)."""
    src, tgt = src_lengths.double(), tgt_lengths.double()
    return float(src.sum()), float(tgt.sum()), float((src * tgt).sum())


_clock: Callable[[], float] = time.perf_counter


def use_cpu_clock() -> None:
    """Time every phase by this process's CPU seconds, divided by torch's threads, instead of wall seconds.

    On a machine shared with other jobs, wall time counts the spells another process held the core;
    CPU time counts only what this process ran (cache contention still shows). Meaningful for the
    CPU at 1 thread; with more, OpenMP threads spinning at barriers count as work.
    """
    global _clock
    threads = torch.get_num_threads()
    _clock = lambda: time.process_time() / threads  # noqa: E731


def now() -> float:
    """The benchmark clock in seconds: wall time unless :func:`use_cpu_clock` was called."""
    return _clock()


def matmul_peak_step(device: torch.device, size: int = PEAK_SIZE) -> tuple[Callable[[object], None], float]:
    """A step for the round-robin timing that multiplies two size x size fp32 matrices (whatever batch it is
    given), and its FLOPs: timed alongside the phases, it gives the same-run peak their shares refer to."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device)
    b = torch.randn(size, size, generator=generator).to(device)
    out = torch.empty(size, size, device=device)

    def step(_batch: object) -> None:
        torch.mm(a, b, out=out)

    return step, 2.0 * size ** 3


def peak_flops(device: torch.device, repeats: int = 5) -> float:
    """The median FLOP/s of ``repeats`` size x size fp32 matmuls on ``device`` (after one untimed)."""
    step, flops = matmul_peak_step(device)
    step(None)
    times = []
    for _ in range(repeats):
        start = now()
        step(None)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(now() - start)
    return flops / statistics.median(times)


class CountingModel:
    """Wraps a search's model to count the work it asks for: source tokens encoded, hypothesis steps
    decoded, and attended (step, source token) pairs. Searches see the model's own encode / decode_step / decode_top."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.src_tokens = self.steps = self.pairs = 0.0
        self._lengths: dict[int, float] = {}

    def __getattr__(self, name: str):
        return getattr(self.model, name)

    def encode(self, src_ids, src_lengths):
        self.src_tokens += float(src_lengths.sum())
        return self.model.encode(src_ids, src_lengths)

    def decode_step(self, prev_ids, state, enc):
        self._count_step(prev_ids, enc)
        return self.model.decode_step(prev_ids, state, enc)

    def decode_top(self, prev_ids, state, enc, k, banned):
        self._count_step(prev_ids, enc)
        return self.model.decode_top(prev_ids, state, enc, k, banned)

    def _count_step(self, prev_ids, enc) -> None:
        self.steps += prev_ids.size(0)
        self.pairs += float(enc.src_mask.sum())  # one host sync; the search makes one per step anyway

    def reset(self) -> None:
        self.src_tokens = self.steps = self.pairs = 0.0
