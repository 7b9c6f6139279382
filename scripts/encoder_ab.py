#!/usr/bin/env python
"""The fused encoder GRU against nn.GRU over packed sequences, timed in one process.

    taskset -c 0 python scripts/encoder_ab.py --sentences 64 --rounds 7

A forward hook on the encoder's nn.GRU makes the encoder call nn.GRU (as the inspection tools
need), so the same model runs both paths; the rounds alternate, so a slow spell of a shared
machine falls on both. Reference config, random weights, batches of up to 14 source and target
tokens (scripts/stepwise_ab.py); one thread unless --threads says otherwise. Phases: the whole
training step (forward, loss, backward, Adam) in fp32 and under bf16 autocast, the encoder's
forward and backward alone, and the encoder without autograd (as search runs it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable

import torch
from torch.nn.utils.rnn import pack_padded_sequence

from seq2seq.config import load_config
from seq2seq.model.encoder import run_gru
from seq2seq.model.fused_encoder import fused_gru
from seq2seq.model.seq2seq import Seq2Seq
from seq2seq.training.loss import Objective
from seq2seq.training.step import build_optimizer
from stepwise_ab import batch


def alternate(runs: dict[str, Callable[[], tuple[float, float]]], rounds: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds of each run, ``rounds`` rounds each taking turns (one more first, as warm-up)."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(rounds + 1):
        for name, run in runs.items():
            times[name].append(run())
    return {name: (statistics.median(v[0] for v in values[1:]), statistics.median(v[1] for v in values[1:]))
            for name, values in times.items()}


def with_nn_gru(model: Seq2Seq, run: Callable[[], tuple[float, float]]) -> Callable[[], tuple[float, float]]:
    """``run`` with a hook on the encoder's nn.GRU, which makes the encoder call it."""
    def hooked() -> tuple[float, float]:
        hook = model.encoder.gru.register_forward_hook(lambda *args: None)
        try:
            return run()
        finally:
            hook.remove()
    return hooked


def timed(work: Callable[[], object], repeats: int) -> Callable[[], tuple[float, float]]:
    """A run of ``work`` ``repeats`` times -> seconds per repeat, wall and this process's CPU time. On one
    thread the CPU time leaves out the time other jobs of a shared machine held the core."""
    def run() -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(repeats):
            work()
        return (time.perf_counter() - wall) / repeats, (time.process_time() - cpu) / repeats
    return run


def report(phase: str, medians: dict[str, tuple[float, float]], tokens: int | None = None) -> None:
    (fused, fused_cpu), (packed, packed_cpu) = medians["fused"], medians["nn.GRU"]
    rate = "" if tokens is None else f"; {tokens / fused:,.0f} vs {tokens / packed:,.0f} target tokens/s"
    print(f"{phase}: fused {fused * 1e3:,.1f} ms, nn.GRU {packed * 1e3:,.1f} ms, fused/nn.GRU time "
          f"{fused / packed:.3f} (CPU time {fused_cpu * 1e3:,.1f} vs {packed_cpu * 1e3:,.1f} ms, "
          f"{fused_cpu / packed_cpu:.3f}){rate}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/multi30k_de_en.yaml")
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, [])
    vocab = cfg.tokenizer.vocab_size
    torch.manual_seed(0)
    model = Seq2Seq.from_config(cfg.model, vocab, vocab).train()
    objective, optimizer = Objective(model, 0.1, 1.0), build_optimizer(model, cfg.train)
    src, lengths, tgt = batch(vocab, args.sentences)
    tokens = int(tgt[:, 1:].numel())

    def train_step() -> None:
        (objective(src, lengths, tgt[:, :-1], tgt[:, 1:])[0] / 1000).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def encoder_step() -> None:
        output, h_n = model.encoder(src, lengths)
        (output.sum() + h_n.sum()).backward()

    order = torch.sort(lengths, descending=True, stable=True).indices
    packed = pack_padded_sequence(model.encoder.embedding(src[order]).detach(), lengths[order], batch_first=True)
    for amp in (False, True):
        label = "bf16 autocast" if amp else "fp32"
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            for phase, work, repeats, count in [("training step", train_step, 3, tokens),
                                                ("encoder forward + backward", encoder_step, 5, None)]:
                run = timed(work, repeats)
                report(f"{phase}, {label}", alternate({"fused": run, "nn.GRU": with_nn_gru(model, run)}, args.rounds),
                       count)
            model.zero_grad(set_to_none=True)
            model.eval()  # no dropout between layers, as in search
            with torch.no_grad():
                runs = {"fused": timed(lambda: fused_gru(model.encoder.gru, packed, False), 5),
                        "nn.GRU": timed(lambda: run_gru(model.encoder.gru, packed), 5)}
                report(f"encoder without autograd (search), {label}", alternate(runs, args.rounds))
            model.train()
    return 0


if __name__ == "__main__":
    sys.exit(main())
