"""Validation on the dev set: teacher-forced loss and sacreBLEU scores of greedy translations."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..config import Config
from ..device import AmpSettings
from ..metrics import score_corpus
from ..search import greedy_search
from .loss import Objective


@dataclass
class Validation:
    """Dev-set scores after one step: loss (NLL per target token), perplexity, BLEU and chrF of greedy output."""

    step: int
    loss: float
    ppl: float
    bleu: float
    chrf: float
    seconds: float = 0.0  # how long validating took
    samples: list[tuple[str, str, str]] = field(default_factory=list)  # (source, reference, greedy output) x a few


def validate(model: nn.Module, objective: Objective, dev: Any, tokenizer: Any, cfg: Config, amp: AmpSettings,
             device: torch.device, step: int = 0, num_samples: int = 3) -> Validation:
    """Teacher-forced dev loss, and sacrebleu BLEU / chrF of greedy translations against the raw references."""
    start = time.perf_counter()
    objective.eval()
    sums, num_tokens = torch.zeros(2, device=device), 0
    hyps = [""] * len(dev)
    order = dev.batch_order(cfg.train.batch_size, cfg.train.batch_by, shuffle=False, seed=0, epoch=0)
    with torch.no_grad(), torch.autocast(device.type, dtype=amp.dtype, enabled=amp.enabled):
        for indices in order:
            batch = dev.collate(indices).to(device)
            sums += objective(batch.src_ids, batch.src_lengths, batch.tgt_in_ids, batch.tgt_out_ids,
                              batch.num_tgt_tokens)
            num_tokens += batch.num_tgt_tokens
            for index, hyp in zip(batch.indices, greedy_search(model, batch.src_ids, batch.src_lengths, cfg.decode)):
                hyps[int(index)] = tokenizer.decode_tgt(hyp.tgt_ids)
    objective.train()
    scores = score_corpus(hyps, list(dev.tgt_text))
    loss = sums[1].item() / max(num_tokens, 1)
    return Validation(step=step, loss=loss, ppl=math.exp(min(loss, 100.0)), bleu=scores.bleu, chrf=scores.chrf,
                      seconds=time.perf_counter() - start,
                      samples=[(dev.src_text[i], dev.tgt_text[i], hyps[i]) for i in range(min(num_samples, len(hyps)))])


def stop_score(result: Validation, metric: str) -> float:
    """The value of ``train.stop_metric`` (bleu, chrf or loss) in a validation, signed so that higher is better."""
    if metric == "loss":
        return -result.loss
    return result.chrf if metric == "chrf" else result.bleu
