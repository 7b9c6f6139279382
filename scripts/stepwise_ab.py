#!/usr/bin/env python
"""The fused step-wise decoder against the nn.GRU-per-step path it replaced, timed in one process.

    taskset -c 1 python scripts/stepwise_ab.py --sentences 70 130 --hypotheses 64 320
    taskset -c 1 python scripts/stepwise_ab.py --config configs/multi30k_de_en_luong.yaml \
        --set model.input_feeding=true --search 64

A forward hook on the decoder's nn.GRU makes a step-wise decoder (Bahdanau, or Luong with input
feeding) call nn.GRU once per step (as the inspection tools need), so the same model runs both
paths; the rounds alternate, so a slow spell of a shared machine falls on both. Reference config
(or --config, with --set overrides), random weights and batches of 14 source and target tokens;
fp32, one thread unless --threads says otherwise. --search N also times greedy and beam-5 search
of N sentences (random weights: every hypothesis runs to the output limit, 1.5 x 14 + 10 tokens).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable

import torch

from seq2seq.config import DecodeConfig, load_config
from seq2seq.model.seq2seq import Seq2Seq
from seq2seq.search import search
from seq2seq.training.loss import Objective
from seq2seq.training.step import build_optimizer

LENGTH = 14


def alternate(model: Seq2Seq, run: Callable[[], float], rounds: int) -> tuple[float, float]:
    """Median seconds of ``run`` on the fused path and on the nn.GRU path, ``rounds`` rounds each, alternating."""
    times: dict[str, list[float]] = {"fused": [], "nn.GRU": []}
    for _ in range(rounds + 1):  # the first round of each is warm-up
        times["fused"].append(run())
        hook = model.decoder.gru.register_forward_hook(lambda *args: None)
        times["nn.GRU"].append(run())
        hook.remove()
    return statistics.median(times["fused"][1:]), statistics.median(times["nn.GRU"][1:])


def batch(vocab: int, sentences: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(LENGTH // 2, LENGTH + 1, (sentences,), generator=generator)
    src = torch.randint(4, vocab, (sentences, LENGTH), generator=generator)
    src[torch.arange(LENGTH)[None, :] >= lengths[:, None]] = 0
    return src, lengths, torch.randint(4, vocab, (sentences, LENGTH + 1), generator=generator)


def time_training(model: Seq2Seq, cfg, vocab: int, sentences: int, rounds: int) -> None:
    """Print the median time of a training step (forward, backward, Adam) on both paths."""
    src, lengths, tgt = batch(vocab, sentences)
    objective, optimizer = Objective(model, 0.1, 1.0), build_optimizer(model, cfg.train)

    def train_steps(n: int = 3) -> float:
        start = time.perf_counter()
        for _ in range(n):
            (objective(src, lengths, tgt[:, :-1], tgt[:, 1:])[0] / 1000).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return (time.perf_counter() - start) / n

    model.train()
    fused, stepped = alternate(model, train_steps, rounds)
    tokens = sentences * LENGTH
    print(f"training step, {sentences} sentences: fused {fused * 1e3:,.0f} ms ({tokens / fused:,.0f} target tokens/s), "
          f"nn.GRU per step {stepped * 1e3:,.0f} ms ({tokens / stepped:,.0f} tokens/s), "
          f"fused/nn.GRU time {fused / stepped:.3f}")


def time_decoder_step(model: Seq2Seq, vocab: int, hypotheses: int, rounds: int) -> None:
    """Print the median time of one decoder step for ``hypotheses`` rows on both paths."""
    src, lengths, tgt = batch(vocab, hypotheses)
    model.eval()
    with torch.no_grad():
        enc = model.encode(src, lengths)
        state = model.init_state(enc)

        def decode_steps(n: int = 30) -> float:
            start, current = time.perf_counter(), state
            for _ in range(n):
                current = model.decode_step(tgt[:, 0], current, enc).state
            return (time.perf_counter() - start) / n

        fused, stepped = alternate(model, decode_steps, rounds)
    print(f"decoder step, {hypotheses} hypotheses: fused {fused * 1e3:.2f} ms, nn.GRU per step "
          f"{stepped * 1e3:.2f} ms, fused/nn.GRU time {fused / stepped:.3f}")


def time_search(model: Seq2Seq, vocab: int, sentences: int, rounds: int) -> None:
    """Print the median time of greedy and beam-5 search of ``sentences`` sentences (fp32) on both paths."""
    src, lengths, _ = batch(vocab, sentences)
    model.eval()
    for beam in (1, 5):
        options = DecodeConfig(beam_size=beam, amp="off")

        def run() -> float:
            start = time.perf_counter()
            search(model, src, lengths, options)
            return time.perf_counter() - start

        fused, stepped = alternate(model, run, rounds)
        print(f"search, beam {beam}, {sentences} sentences: fused {sentences / fused:,.1f} sentences/s, "
              f"nn.GRU per step {sentences / stepped:,.1f} sentences/s, fused/nn.GRU time {fused / stepped:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/multi30k_de_en.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--sentences", type=int, nargs="*", default=[70, 130], help="training batch sizes")
    parser.add_argument("--hypotheses", type=int, nargs="*", default=[64, 320], help="search batch sizes")
    parser.add_argument("--search", type=int, default=0, help="also time greedy and beam-5 search of N sentences")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.set)
    vocab = cfg.tokenizer.vocab_size
    torch.manual_seed(0)
    model = Seq2Seq.from_config(cfg.model, vocab, vocab)
    print(f"model.attention {cfg.model.attention}, model.input_feeding {cfg.model.input_feeding}, "
          f"{torch.get_num_threads()} thread(s)")
    for sentences in args.sentences:
        time_training(model, cfg, vocab, sentences, args.rounds)
    for hypotheses in args.hypotheses:
        time_decoder_step(model, vocab, hypotheses, args.rounds)
    if args.search:
        time_search(model, vocab, args.search, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
