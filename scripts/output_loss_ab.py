#!/usr/bin/env python
"""The chunked output layer + loss (``training.loss.output_loss_sums``) against logits-then-loss, in one process.

    taskset -c 1 python scripts/output_loss_ab.py --sentences 130
    taskset -c 1 python scripts/output_loss_ab.py --sentences 130 --amp bf16   # CPUs with bf16 matrix units
    taskset -c 1 python scripts/output_loss_ab.py --sentences 130 --vocab 32000

Times a whole training step (forward, backward, Adam) of the reference config (random weights,
batches of 14 source and target tokens, as ``scripts/stepwise_ab.py``) with the Objective as it
is and with its output layer applied the way it was before: the full (N, V) logits, then
``token_loss_sums``. The rounds alternate, so a slow spell of a shared machine falls on both.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from seq2seq.config import load_config
from seq2seq.model.seq2seq import Seq2Seq
from seq2seq.training import loss
from seq2seq.training.step import build_optimizer
from stepwise_ab import LENGTH, batch


def logits_then_loss(self: loss.Objective, src_ids: torch.Tensor, src_lengths: torch.Tensor, tgt_in_ids: torch.Tensor,
                     tgt_out_ids: torch.Tensor, num_tokens: int | None = None) -> torch.Tensor:
    """Objective.forward before the chunked output layer: write the logits, then the loss."""
    rows = loss.real_positions(tgt_out_ids, num_tokens)
    targets = tgt_out_ids.reshape(-1).index_select(0, rows)
    return loss.token_loss_sums(self.model(src_ids, src_lengths, tgt_in_ids, rows=rows), targets,
                                self.label_smoothing)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/multi30k_de_en.yaml")
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--sentences", type=int, default=130)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--amp", choices=["off", "bf16"], default="off")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    torch.manual_seed(0)
    model = Seq2Seq.from_config(cfg.model, args.vocab, args.vocab).train()
    src, lengths, tgt = batch(args.vocab, args.sentences)
    objective, optimizer = loss.Objective(model, cfg.train.label_smoothing, 1.0), build_optimizer(model, cfg.train)
    paths = {"chunked": loss.Objective.forward, "logits, then loss": logits_then_loss}

    def steps(n: int = 3) -> float:
        start = time.perf_counter()
        for _ in range(n):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.amp == "bf16"):
                sums = objective(src, lengths, tgt[:, :-1], tgt[:, 1:])
            (sums[0] / 1000).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return (time.perf_counter() - start) / n

    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.rounds + 1):  # the first round of each is warm-up
        for name, forward in paths.items():
            loss.Objective.forward = forward
            times[name].append(steps())
    medians = {name: statistics.median(values[1:]) for name, values in times.items()}
    tokens = args.sentences * LENGTH
    for name, seconds in medians.items():
        print(f"{name:18s} {seconds * 1e3:7.1f} ms per step  {tokens / seconds:7.0f} target tokens/s")
    print(f"chunked / before: {medians['chunked'] / medians['logits, then loss']:.3f} of the time per step "
          f"({args.amp}, {args.threads} thread(s), {tokens} target tokens per batch, vocabulary {args.vocab})")


if __name__ == "__main__":
    main()
