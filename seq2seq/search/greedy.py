"""Greedy search: the most probable token at each step, for every sentence of a batch at once."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..config import DecodeConfig
from ..device import to_device_async
from ..ids import BOS_ID, EOS_ID
from .common import Hypothesis, StepModel, length_penalty, max_output_lengths, top_next_tokens


def greedy_search(model: StepModel, src_ids: Tensor, src_lengths: Tensor, options: DecodeConfig | None = None,
                  return_attention: bool = False) -> list[Hypothesis]:
    """Pick the most probable token at each step. src_ids (B, S), src_lengths (B,) -> one Hypothesis per sentence.

    A sentence stops at its EOS and leaves the batch, so later steps compute only the
    sentences still open; the search stops when every sentence has. ``options.beam_size``
    and ``nbest`` are ignored.
    """
    options = options or DecodeConfig()
    limits = max_output_lengths(src_lengths, options)
    device = src_ids.device
    enc = model.encode(src_ids, src_lengths)
    batch_size = src_ids.size(0)
    rows = _GreedyRows(sentence=torch.arange(batch_size), limits=limits, limit_rows=limits.to(device),
                       enc=enc, state=model.init_state(enc),
                       log_prob=torch.zeros(batch_size, device=device),
                       history=torch.empty(batch_size, 0, dtype=torch.long, device=device), attention=None)
    prev_ids = torch.full((batch_size,), BOS_ID, dtype=torch.long, device=device)
    finished_parts: list[_GreedyRows] = []
    for step in range(int(limits.max()) + 1):
        top = top_next_tokens(model, prev_ids, rows.state, rows.enc, 1, step=step, limits=rows.limit_rows,
                              shortest_limit=int(rows.limits.min()), options=options, history=rows.history)
        tgt_ids = top.ids[:, 0]
        rows = rows.advance(top.state, tgt_ids, top.log_probs[:, 0], top.attention if return_attention else None)
        finished = (tgt_ids == EOS_ID).cpu()  # the one host synchronisation per step
        if bool(finished.any()):
            finished_parts.append(rows.select(finished.nonzero()[:, 0], keep_model_state=False))
            if bool(finished.all()):
                break
            still_open = (~finished).nonzero()[:, 0]
            rows = rows.select(still_open)
            tgt_ids = tgt_ids.index_select(0, to_device_async(still_open, device))
        prev_ids = tgt_ids
    return _greedy_hypotheses(finished_parts, src_lengths, options.length_penalty)


@dataclass
class _GreedyRows:
    """The sentences greedy search is still extending (or, once selected out, has finished).

    sentence/limits (A,) on the CPU: the input row and output limit of each; limit_rows the
    limits on the device; log_prob (A,); history (A, t) the tokens so far; attention (A, t, S) or None.
    """

    sentence: Tensor
    limits: Tensor
    limit_rows: Tensor
    enc: Any
    state: Any
    log_prob: Tensor
    history: Tensor
    attention: Tensor | None

    def advance(self, state: Any, tgt_ids: Tensor, step_log_prob: Tensor, attention: Tensor | None) -> _GreedyRows:
        """Append this step's tokens (A,), their log-probabilities (A,) and attention (A, S)."""
        history = torch.cat([self.history, tgt_ids.unsqueeze(1)], dim=1)
        if attention is not None:
            step_attention = attention.float().unsqueeze(1)
            attention = step_attention if self.attention is None else torch.cat([self.attention, step_attention], 1)
        return dataclasses.replace(self, state=state, log_prob=self.log_prob + step_log_prob, history=history,
                                   attention=attention)

    def select(self, keep: Tensor, keep_model_state: bool = True) -> _GreedyRows:
        """The rows ``keep`` (A',) CPU long; without the encoder output and state for rows that are done."""
        on_device = to_device_async(keep, self.history.device)  # no second host sync in this step
        return _GreedyRows(
            sentence=self.sentence[keep], limits=self.limits[keep], limit_rows=self.limit_rows[on_device],
            enc=self.enc.index_select(on_device) if keep_model_state else None,
            state=self.state.index_select(on_device) if keep_model_state else None,
            log_prob=self.log_prob[on_device], history=self.history[on_device],
            attention=None if self.attention is None else self.attention[on_device])


def _greedy_hypotheses(parts: list[_GreedyRows], src_lengths: Tensor, alpha: float) -> list[Hypothesis]:
    """One Hypothesis per sentence from the finished parts, whose rows all end with EOS."""
    hypotheses: list[Hypothesis | None] = [None] * len(src_lengths)
    for part in parts:
        for row, (sentence, ids, total) in enumerate(zip(part.sentence.tolist(), part.history.tolist(),
                                                         part.log_prob.tolist())):
            length = len(ids) - 1
            attention = None
            if part.attention is not None:
                attention = part.attention[row, :, :int(src_lengths[sentence])].cpu()
            hypotheses[sentence] = Hypothesis(tgt_ids=ids[:length], score=total / length_penalty(length + 1, alpha),
                                              log_prob=total, attention=attention)
    return hypotheses
