"""Forced decoding: how probable a model finds given translations (``seq2seq logprob``, ``Translator.score_pairs``).

The target of each pair is fed to the decoder token by token through the model's step API
(``encode``/``init_state``/``decode_step``, so an ensemble scores as it searches), and the
log-probability of each reference token, EOS included, is read off. The sum over a sentence
is log P(target | source); the mean is the negative of the per-token cross-entropy that
training minimises without label smoothing. Sources longer than ``data.max_length`` are
truncated as in translation; targets are scored whole. No search mask applies here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .data.batches import length_sorted_batches, pad_ids
from .errors import DataError
from .ids import BOS_ID, EOS_ID, PAD_ID


@dataclass
class PairScore:
    """The log-probability of one target given its source (natural log)."""

    log_prob: float  # sum over the target tokens, EOS included
    num_tokens: int  # target tokens scored: subword pieces + EOS
    token_log_probs: list[float]  # one per target token, EOS last
    tgt_ids: list[int]  # the target pieces' ids, without EOS

    @property
    def mean_log_prob(self) -> float:
        """log_prob / num_tokens: minus the per-token cross-entropy."""
        return self.log_prob / self.num_tokens


def score_pairs(model: Any, tokenizer: Any, sources: list[str], targets: list[str], *, max_length: int,
                batch_size: int, device: torch.device) -> list[PairScore]:
    """One :class:`PairScore` per (source, target) pair, in input order; batches of about ``batch_size`` tokens.

    ``model`` is anything with the search's step API (a Seq2Seq or an Ensemble) in eval mode.
    """
    if len(sources) != len(targets):
        raise DataError(f"{len(sources)} sources but {len(targets)} targets: the pairs must be aligned")
    src_ids = [ids[:max_length] for ids in tokenizer.encode_src_batch(sources)]
    tgt_ids = tokenizer.encode_tgt_batch(targets)
    scores: list[PairScore | None] = [None] * len(sources)
    # Empty sources are read as one pad token by the encoder; lengths here only order the batches.
    lengths = [max(len(s), len(t) + 1) for s, t in zip(src_ids, tgt_ids)]
    for batch in length_sorted_batches(lengths, batch_size):
        token_log_probs = forced_log_probs(model, [src_ids[i] for i in batch], [tgt_ids[i] for i in batch], device)
        for index, values in zip(batch, token_log_probs):
            scores[index] = PairScore(log_prob=sum(values), num_tokens=len(values), token_log_probs=values,
                                      tgt_ids=tgt_ids[index])
    return [score for score in scores if score is not None]


def forced_log_probs(model: Any, src_ids: list[list[int]], tgt_ids: list[list[int]],
                     device: torch.device) -> list[list[float]]:
    """The log-probability of every target token (EOS last) given the source, for one batch of id lists."""
    src, src_lengths = pad_ids(src_ids)
    tgt, _ = pad_ids([[BOS_ID, *ids, EOS_ID] for ids in tgt_ids])
    tgt = tgt.to(device)
    with torch.no_grad():
        enc = model.encode(src.to(device), src_lengths)
        state = model.init_state(enc)
        steps: list[Tensor] = []
        for t in range(tgt.size(1) - 1):
            log_probs, state, _ = model.decode_step(tgt[:, t], state, enc)
            steps.append(log_probs.float().gather(1, tgt[:, t + 1:t + 2]))
    picked = torch.cat(steps, dim=1).masked_fill(tgt[:, 1:] == PAD_ID, 0.0).tolist()  # (B, T)
    return [row[:len(ids) + 1] for row, ids in zip(picked, tgt_ids)]


def format_score(score: PairScore, pieces: list[str] | None = None) -> str:
    """``sum<TAB>mean``; with ``pieces`` (the target pieces, EOS last) a third column of ``piece=log_prob`` items."""
    line = f"{score.log_prob:.4f}\t{score.mean_log_prob:.4f}"
    if pieces is not None:
        line += "\t" + " ".join(f"{piece}={value:.4f}" for piece, value in zip(pieces, score.token_log_probs))
    return line
