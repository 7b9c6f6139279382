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

    def forward(self, src_ids: Tensor, src_lengths: Tensor, tgt_in_ids: Tensor, tgt_out_ids: Tensor,
                num_tokens: int | None = None) -> Tensor:
        """(B, S), (B,), (B, T), (B, T) -> (2,) float32: label-smoothed loss and NLL, summed over real tokens.

        ``num_tokens``, the count of non-PAD target tokens when the caller knows it on the host
        (``Batch.num_tgt_tokens``), lets the real positions be found without a device sync.
        """
        rows = real_positions(tgt_out_ids, num_tokens)
        targets = tgt_out_ids.reshape(-1).index_select(0, rows)
        if self.training and self.teacher_forcing < 1.0:
            log_probs = self._scheduled_sampling(src_ids, src_lengths, tgt_in_ids)
            return token_loss_sums(log_probs.reshape(-1, log_probs.size(-1)).index_select(0, rows), targets,
                                   self.label_smoothing)
        # Only the real positions reach the output layer: padding costs neither the V-wide product nor the loss.
        return token_loss_sums(self.model(src_ids, src_lengths, tgt_in_ids, rows=rows), targets, self.label_smoothing)

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


def real_positions(tgt_out_ids: Tensor, num_tokens: int | None = None) -> Tensor:
    """The flat indices (N,) into (B * T) of the non-PAD positions of tgt_out_ids (B, T), in row-major order.

    With ``num_tokens`` (it must equal N) the count is known in advance, so a GPU need not report it back.
    """
    real = (tgt_out_ids != PAD_ID).reshape(-1)
    if num_tokens is not None:
        try:
            return torch.nonzero_static(real, size=num_tokens)[:, 0]
        except NotImplementedError:  # torch < 2.6 has no CUDA kernel for it: one device sync instead
            pass
    return real.nonzero()[:, 0]


def token_loss_sums(logits: Tensor, targets: Tensor, label_smoothing: float) -> Tensor:
    """logits (N, V) of N real target tokens, targets (N,) -> (2,) float32: label-smoothed loss and NLL sums.

    Smoothing spreads ``label_smoothing`` uniformly over the vocabulary, as
    ``F.cross_entropy(label_smoothing=...)`` does: (1 - e) * nll + e * mean_v(-log p_v). Log-probabilities
    in place of logits give the same sums and gradients (their log-sum-exp is 0).
    """
    return SmoothedCrossEntropy.apply(logits, targets, label_smoothing)


class SmoothedCrossEntropy(torch.autograd.Function):
    """:func:`token_loss_sums` as one autograd node.

    Autograd through log_softmax, gather and mean keeps and writes several (N, V) tensors (the
    log-probabilities, the gather's zero-filled scatter, the mean's expanded gradient) at a
    vocabulary of thousands; this backward writes the gradient, softmax minus the smoothed
    target, in one tensor.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, smoothing: float) -> Tensor:
        # log_softmax is one vectorised kernel on the CPU (logsumexp is several passes, about 2.5x slower).
        log_probs = torch.log_softmax(logits, dim=1, dtype=torch.float32)
        nll = -log_probs.gather(1, targets[:, None])[:, 0]
        smoothed = (1.0 - smoothing) * nll - smoothing * log_probs.mean(dim=1)
        ctx.save_for_backward(log_probs, targets)
        ctx.smoothing, ctx.logits_dtype = smoothing, logits.dtype
        return torch.stack([smoothed.sum(), nll.sum()])

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        log_probs, targets = ctx.saved_tensors
        e, vocab = ctx.smoothing, log_probs.size(1)
        g_loss, g_nll = grad[0], grad[1]
        d = log_probs.exp()  # softmax
        d.mul_(g_loss + g_nll).sub_(g_loss * (e / vocab))
        d.scatter_add_(1, targets[:, None], (-(g_loss * (1.0 - e) + g_nll)).expand(len(targets), 1))
        return d.to(ctx.logits_dtype), None, None
