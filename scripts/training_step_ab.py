#!/usr/bin/env python
"""One change to the training step against the code it replaced, timed in one process.

    taskset -c 1 python scripts/training_step_ab.py --change chunked-loss --sentences 130
    taskset -c 1 python scripts/training_step_ab.py --change chunked-loss --sentences 130 --amp bf16  # bf16 units
    taskset -c 1 python scripts/training_step_ab.py --change chunked-loss --sentences 130 --vocab 32000
    taskset -c 1 python scripts/training_step_ab.py --change chunked-loss --vocab 32000 --chunk-rows 32
    taskset -c 1 python scripts/training_step_ab.py --change dropout-masks --sentences 130
    taskset -c 1 python scripts/training_step_ab.py --change packed-loop --sentences 136

Changes:
  chunked-loss   the output layer and the loss together in row chunks (``training.loss.output_loss_sums``)
                 against the full (N, V) logits, then ``token_loss_sums``;
  dropout-masks  dropout masks from packed 16-bit draws (``model.dropout``) against ``bernoulli_``;
  packed-loop    the fused Bahdanau loop running only the rows whose targets are still going
                 (``model.decoder._host_lengths``) against stepping every row through the padding.

Times a whole training step (forward, backward, Adam) of the reference config (random weights,
batches of 14 source and target tokens, as ``scripts/stepwise_ab.py``; with ``--padded-targets``, and
always for packed-loop, the targets are cut to the sources' lengths, 7 to 14 tokens) both ways; the rounds
alternate, so a slow spell of a shared machine falls on both.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from seq2seq.config import load_config
from seq2seq.ids import PAD_ID
from seq2seq.model import decoder, dropout, fused
from seq2seq.model.seq2seq import Seq2Seq
from seq2seq.training import loss
from seq2seq.training.step import build_optimizer
from stepwise_ab import batch


def logits_then_loss(self: loss.Objective, src_ids: torch.Tensor, src_lengths: torch.Tensor, tgt_in_ids: torch.Tensor,
                     tgt_out_ids: torch.Tensor, num_tokens: int | None = None) -> torch.Tensor:
    """Objective.forward before the chunked output layer: write the logits, then the loss."""
    rows = loss.real_positions(tgt_out_ids, num_tokens)
    targets = tgt_out_ids.reshape(-1).index_select(0, rows)
    return loss.token_loss_sums(self.model(src_ids, src_lengths, tgt_in_ids, rows=rows), targets,
                                self.label_smoothing)


def bernoulli_mask(shape: tuple[int, ...], p: float, device: torch.device,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The dropout mask as nn.Dropout draws it: one bernoulli_ draw per element."""
    return torch.empty(shape, device=device, dtype=dtype).bernoulli_(1.0 - p).div_(1.0 - p)


def _set_mask(mask: Callable) -> Callable[[], None]:
    def use() -> None:
        dropout.scaled_keep_mask = fused.scaled_keep_mask = mask
    return use


def _set_forward(forward: Callable) -> Callable[[], None]:
    def use() -> None:
        loss.Objective.forward = forward
    return use


def _set_host_lengths(host_lengths: Callable) -> Callable[[], None]:
    def use() -> None:
        decoder._host_lengths = host_lengths
    return use


CHANGES = {  # name -> (label and switch of the new code, label and switch of the old)
    "chunked-loss": (("chunked", _set_forward(loss.Objective.forward)),
                     ("logits, then loss", _set_forward(logits_then_loss))),
    "dropout-masks": (("16-bit masks", _set_mask(dropout.scaled_keep_mask)),
                      ("bernoulli_", _set_mask(bernoulli_mask))),
    "packed-loop": (("packed", _set_host_lengths(decoder._host_lengths)),
                    ("through the padding", _set_host_lengths(lambda tgt_in_ids: None))),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--change", choices=sorted(CHANGES), required=True)
    parser.add_argument("--config", default="configs/multi30k_de_en.yaml")
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--sentences", type=int, default=130)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--amp", choices=["off", "bf16"], default="off")
    parser.add_argument("--chunk-rows", type=int, help="chunked-loss: rows per chunk instead of the package's rule")
    parser.add_argument("--padded-targets", action="store_true",
                        help="cut each target to its source's length (padding after it), as real batches are")
    args = parser.parse_args()
    if args.chunk_rows:
        loss._chunk_rows = lambda vocab_size, device: args.chunk_rows
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    torch.manual_seed(0)
    model = Seq2Seq.from_config(cfg.model, args.vocab, args.vocab).train()
    src, lengths, tgt = batch(args.vocab, args.sentences)
    if args.padded_targets or args.change == "packed-loop":
        # row b keeps its first (input-only) token and lengths[b] target tokens: targets as long as their sources
        tgt[torch.arange(tgt.size(1))[None, :] > lengths[:, None]] = PAD_ID
    objective, optimizer = loss.Objective(model, cfg.train.label_smoothing, 1.0), build_optimizer(model, cfg.train)

    def steps(n: int = 3) -> float:
        start = time.perf_counter()
        for _ in range(n):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.amp == "bf16"):
                sums = objective(src, lengths, tgt[:, :-1], tgt[:, 1:])
            (sums[0] / 1000).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return (time.perf_counter() - start) / n

    (new, use_new), (old, use_old) = CHANGES[args.change]
    times: dict[str, list[float]] = {new: [], old: []}
    for _ in range(args.rounds + 1):  # the first round of each is warm-up
        for name, use in ((new, use_new), (old, use_old)):
            use()
            times[name].append(steps())
    use_new()
    medians = {name: statistics.median(values[1:]) for name, values in times.items()}
    tokens = int((tgt[:, 1:] != PAD_ID).sum())
    for name, seconds in medians.items():
        print(f"{name:18s} {seconds * 1e3:7.1f} ms per step  {tokens / seconds:7.0f} target tokens/s")
    print(f"{new} / {old}: {medians[new] / medians[old]:.3f} of the time per step "
          f"({args.amp}, {args.threads} thread(s), {tokens} target tokens per batch, vocabulary {args.vocab})")


if __name__ == "__main__":
    main()
