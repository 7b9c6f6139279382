"""Ensemble decoding: several models of one target vocabulary searched as one :class:`StepModel`.

At every step the ensemble's log-probability of a token is the **mean of the members'
log-probabilities** (the log of the geometric mean of their distributions, left unnormalised, as
Marian combines models with equal weights). It stays <= 0 and only falls as tokens are added, so beam search
keeps its exact stopping rule, and an ensemble of a model with itself scores exactly like the
model. Each member keeps its own encoder output and decoder state; the pair below selects
rows of all of them at once, which is all greedy, beam and sampling search ask of a state.
Attention, for plots, is the mean of the attention of the members that have attention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


@dataclass
class EnsembleEncoding:
    """The encoder output of every member, in member order."""

    members: list[Any]

    def index_select(self, idx: Tensor) -> EnsembleEncoding:
        """Select, reorder or repeat sentences (idx (B',) long) in every member's encoder output."""
        return EnsembleEncoding([enc.index_select(idx) for enc in self.members])


@dataclass
class EnsembleState:
    """The decoder state of every member, in member order."""

    members: list[Any]

    def index_select(self, idx: Tensor) -> EnsembleState:
        """Select, reorder or repeat hypotheses (idx (N',) long) in every member's decoder state."""
        return EnsembleState([state.index_select(idx) for state in self.members])


class Ensemble(nn.Module):
    """Models searched together: ``encode``/``init_state``/``decode_step`` as a single ``Seq2Seq`` offers them.

    The members must share the target vocabulary (and read the same source ids): the caller
    checks their tokenizers (:meth:`seq2seq.translator.Translator.from_checkpoints`).
    """

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one model")
        self.members = nn.ModuleList(members)

    def encode(self, src_ids: Tensor, src_lengths: Tensor) -> EnsembleEncoding:
        """src_ids (B, S), src_lengths (B,) -> every member's encoder output."""
        return EnsembleEncoding([model.encode(src_ids, src_lengths) for model in self.members])

    def init_state(self, enc: EnsembleEncoding) -> EnsembleState:
        """Every member's first decoder state."""
        return EnsembleState([model.init_state(e) for model, e in zip(self.members, enc.members)])

    def decode_step(self, prev_ids: Tensor, state: EnsembleState, enc: EnsembleEncoding
                    ) -> tuple[Tensor, EnsembleState, Tensor | None]:
        """prev_ids (N,) -> (mean of the members' log-probabilities (N, V) float32, next states,
        mean attention (N, S) of the members with attention, or None when none has any)."""
        log_probs, states, attentions = [], [], []
        for model, member_state, member_enc in zip(self.members, state.members, enc.members):
            member_log_probs, next_state, attention = model.decode_step(prev_ids, member_state, member_enc)
            log_probs.append(member_log_probs.float())
            states.append(next_state)
            if attention is not None:
                attentions.append(attention.float())
        mean_attention = torch.stack(attentions).mean(dim=0) if attentions else None
        return torch.stack(log_probs).mean(dim=0), EnsembleState(states), mean_attention
