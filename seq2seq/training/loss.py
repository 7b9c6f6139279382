"""The training objective: label-smoothed cross-entropy per target token, with optional scheduled sampling."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..ids import PAD_ID


class Objective(nn.Module):
    """The training loss of a Seq2Seq. DDP wraps this module, so both teacher-forcing paths average gradients.

    With ``teacher_forcing`` 1 (or in eval mode) the whole target runs through ``forward``;
    below 1 it steps with ``decode_step``, feeding at each position the reference token with
    that probability and otherwise a token sampled from the model (scheduled sampling,
    Bengio et al. 2015).
    """

    def __init__(self, model: nn.Module, label_smoothing: float, teacher_forcing: float) -> None:
        super().__init__()
        self.model = model
        self.label_smoothing = label_smoothing
        self.teacher_forcing = teacher_forcing

    def forward(self, src_ids: Tensor, src_lengths: Tensor, tgt_in_ids: Tensor, tgt_out_ids: Tensor) -> Tensor:
        """(B, S), (B,), (B, T), (B, T) -> (2,) float32: label-smoothed loss and NLL, summed over real tokens."""
        if self.training and self.teacher_forcing < 1.0:
            log_probs = self._scheduled_sampling(src_ids, src_lengths, tgt_in_ids)
        else:
            log_probs = torch.log_softmax(self.model(src_ids, src_lengths, tgt_in_ids).float(), dim=-1)
        return token_loss_sums(log_probs, tgt_out_ids, self.label_smoothing)

    def _scheduled_sampling(self, src_ids: Tensor, src_lengths: Tensor, tgt_in_ids: Tensor) -> Tensor:
        """-> log_probs (B, T, V) float32, stepping the decoder one token at a time."""
        enc = self.model.encode(src_ids, src_lengths)
        state = self.model.init_state(enc)
        prev_ids = tgt_in_ids[:, 0]
        steps = []
        for t in range(tgt_in_ids.size(1)):
            log_probs, state, _ = self.model.decode_step(prev_ids, state, enc)
            steps.append(log_probs.float())
            if t + 1 < tgt_in_ids.size(1):
                sampled = torch.multinomial(log_probs.detach().float().exp(), 1).squeeze(1)
                use_reference = torch.rand(sampled.shape, device=sampled.device) < self.teacher_forcing
                prev_ids = torch.where(use_reference, tgt_in_ids[:, t + 1], sampled)
        return torch.stack(steps, dim=1)


def token_loss_sums(log_probs: Tensor, tgt_out_ids: Tensor, label_smoothing: float) -> Tensor:
    """log_probs (B, T, V), tgt_out_ids (B, T) -> (2,): label-smoothed loss and NLL summed over non-PAD tokens.

    Smoothing spreads ``label_smoothing`` uniformly over the vocabulary, as
    ``F.cross_entropy(label_smoothing=...)`` does: (1 - e) * nll + e * mean_v(-log p_v).
    """
    mask = tgt_out_ids != PAD_ID
    nll = -log_probs.gather(-1, tgt_out_ids.unsqueeze(-1)).squeeze(-1)
    smoothed = (1.0 - label_smoothing) * nll - label_smoothing * log_probs.mean(dim=-1)
    return torch.stack([smoothed.masked_fill(~mask, 0.0).sum(), nll.masked_fill(~mask, 0.0).sum()])
