"""Sampling search: each output token drawn from the model's (tempered, truncated) distribution.

For back-translation and diverse outputs. ``num_samples`` independent samples per sentence
run as rows of one tensor. At each step the search's masks apply first (as in greedy and
beam search: no PAD/BOS, ``min_length``, ``no_repeat_ngram``, the output limit); then the
log-probabilities are divided by ``temperature``, cut to the ``top_k`` most probable tokens
(0 = all) and to the smallest set whose probability reaches ``top_p`` (nucleus sampling,
Holtzman et al. 2020; 1.0 = all), and a token is drawn. A hypothesis's ``log_prob`` is the
model's own (untempered) log-probability of the tokens drawn, so ``top_k`` 1 gives greedy
search's output and scores exactly. Draws come from ``generator`` only: one seed, one output.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..config import DecodeConfig
from ..ids import BOS_ID, EOS_ID
from .common import NEG_INF, Hypothesis, StepModel, length_penalty, mask_log_probs, max_output_lengths


def sample_search(model: StepModel, src_ids: Tensor, src_lengths: Tensor, options: DecodeConfig,
                  generator: torch.Generator, return_attention: bool = False) -> list[list[Hypothesis]]:
    """``options.nbest`` samples per sentence, best score first. src_ids (B, S), src_lengths (B,).

    Uses ``options.temperature``, ``top_k`` and ``top_p``; ``beam_size`` is ignored.
    ``generator`` must live on the device of ``src_ids``.
    """
    num_samples = options.nbest
    batch_size, device = src_ids.size(0), src_ids.device
    rows = torch.arange(batch_size, device=device).repeat_interleave(num_samples)  # sentence of each row
    limits = max_output_lengths(src_lengths, options).repeat_interleave(num_samples)
    limit_rows = limits.to(device)
    enc = model.encode(src_ids, src_lengths)  # one row per sentence, shared by its samples (StepModel)
    state: Any = model.init_state(enc).index_select(rows)
    prev_ids = torch.full((len(rows),), BOS_ID, dtype=torch.long, device=device)
    history = torch.empty(len(rows), 0, dtype=torch.long, device=device)
    log_prob = torch.zeros(len(rows), device=device)
    done = torch.zeros(len(rows), dtype=torch.bool, device=device)
    attentions: list[Tensor] = []
    for step in range(int(limits.max()) + 1):
        step_log_probs, state, attention = model.decode_step(prev_ids, state, enc)
        step_log_probs = mask_log_probs(step_log_probs.float(), step=step, limits=limit_rows,
                                        shortest_limit=int(limits.min()), options=options, history=history)
        tgt_ids = draw(step_log_probs, options, generator)
        tgt_ids = tgt_ids.masked_fill(done, EOS_ID)  # finished rows only repeat EOS, at no cost
        log_prob += step_log_probs.gather(1, tgt_ids.unsqueeze(1)).squeeze(1).masked_fill(done, 0.0)
        history = torch.cat([history, tgt_ids.unsqueeze(1)], dim=1)
        if return_attention and attention is not None:
            attentions.append(attention.float())
        done |= tgt_ids == EOS_ID
        if bool(done.all()):  # the one host synchronisation per step
            break
        prev_ids = tgt_ids
    attention_history = torch.stack(attentions, dim=1) if attentions else None  # (N, t, S)
    return _sample_hypotheses(history, log_prob, attention_history, src_lengths, num_samples,
                              options.length_penalty)


def draw(log_probs: Tensor, options: DecodeConfig, generator: torch.Generator) -> Tensor:
    """One token per row from log_probs (N, V) (-inf = forbidden), tempered and truncated -> (N,) long."""
    scores = log_probs / options.temperature
    if options.top_k:
        kth = scores.topk(min(options.top_k, scores.size(1)), dim=1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, NEG_INF)
    if options.top_p < 1.0:
        sorted_scores, order = scores.sort(dim=1, descending=True)
        sorted_probs = torch.softmax(sorted_scores, dim=1)
        # Drop a token when the tokens before it already reach top_p; the most probable always stays.
        outside = (sorted_probs.cumsum(dim=1) - sorted_probs) >= options.top_p
        scores = scores.scatter(1, order, sorted_scores.masked_fill(outside, NEG_INF))
    return torch.multinomial(torch.softmax(scores, dim=1), 1, generator=generator).squeeze(1)


def _sample_hypotheses(history: Tensor, log_prob: Tensor, attention: Tensor | None, src_lengths: Tensor,
                       num_samples: int, alpha: float) -> list[list[Hypothesis]]:
    """Cut each row at its first EOS; group the rows of each sentence, best score first."""
    nbest_lists: list[list[Hypothesis]] = [[] for _ in range(len(src_lengths))]
    for row, (ids, total) in enumerate(zip(history.tolist(), log_prob.tolist())):
        sentence = row // num_samples
        length = ids.index(EOS_ID)
        row_attention = None
        if attention is not None:
            row_attention = attention[row, :length + 1, :int(src_lengths[sentence])].cpu()
        nbest_lists[sentence].append(Hypothesis(tgt_ids=ids[:length], score=total / length_penalty(length + 1, alpha),
                                                log_prob=total, attention=row_attention))
    for hypotheses in nbest_lists:
        hypotheses.sort(key=lambda h: -h.score)
    return nbest_lists
