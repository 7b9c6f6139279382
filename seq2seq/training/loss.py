"""The training objective: label-smoothed cross-entropy per target token, with optional scheduled sampling."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..ids import PAD_ID
from ..model.gru_cell import product_dtype


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
        features = self.model.output_features(src_ids, src_lengths, tgt_in_ids, rows=rows)
        layer = self.model.output_layer
        return output_loss_sums(features, layer.weight, layer.bias, targets, self.label_smoothing)

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
        g_p, g_uniform, g_onehot = _logit_grad_coefficients(grad, e, vocab)
        d = log_probs.exp()  # softmax
        d.mul_(g_p).sub_(g_uniform)
        d.scatter_add_(1, targets[:, None], (-g_onehot).expand(len(targets), 1))
        return d.to(ctx.logits_dtype), None, None


def _logit_grad_coefficients(grad: Tensor, smoothing: float, vocab_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """The gradient of (smoothed loss, NLL) weighted by ``grad`` (2,) with respect to the logits is
    ``g_p * softmax - g_uniform - g_onehot * onehot(target)``: -> (g_p, g_uniform, g_onehot)."""
    g_loss, g_nll = grad[0], grad[1]
    return g_loss + g_nll, g_loss * (smoothing / vocab_size), g_loss * (1.0 - smoothing) + g_nll


def output_loss_sums(features: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor,
                     label_smoothing: float) -> Tensor:
    """:func:`token_loss_sums` of the logits ``F.linear(features, weight, bias)``, without writing them.

    features (N, E), weight (V, E), bias (V,) or None, targets (N,) -> (2,) float32 (float64 for float64
    features): the same sums and gradients as the two steps apart, computed by :class:`OutputLayerLoss`
    in row chunks. Without gradients (validation) only the sums are computed.
    """
    inputs = (features, weight) if bias is None else (features, weight, bias)
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        return OutputLayerLoss.apply(features, weight, bias, targets, label_smoothing)
    with torch.autocast(features.device.type, enabled=False):  # validation: the sums alone
        return _chunked_forward(features, weight, bias, targets, label_smoothing, _product_dtype(features),
                                with_grad=False)[0]


def _product_dtype(features: Tensor) -> torch.dtype:
    """Autocast's dtype for the output layer when it is on, else that of the features."""
    return product_dtype(features.device) if torch.is_autocast_enabled(features.device.type) else features.dtype


def _chunk_rows(vocab_size: int, device: torch.device) -> int:
    """Rows of logits per chunk. On the CPU about 4 MB of fp32 logits, so that a chunk's exp and sums stay in
    cache, but at least 128 rows, below which the products slow down more than the cache saves (128 rows
    measured fastest at 8,000 and 32,000 pieces: ``scripts/training_step_ab.py``, BENCHMARKS.md). On a GPU the
    chunks only bound memory (256 MB of logits each): fewer, larger products keep it busy."""
    if device.type == "cuda":
        return max(1024, 2**26 // vocab_size)
    return max(128, 2**20 // vocab_size)


class OutputLayerLoss(torch.autograd.Function):
    """The output layer and :class:`SmoothedCrossEntropy` as one autograd node that never holds (N, V).

    The loss is the last node of the graph, so its gradient is known up to the two incoming
    scalars (d/d smoothed loss, d/d NLL) while the forward pass has each chunk of logits in
    cache: with P the softmax, the gradient with respect to the logits is
    ``(g_loss + g_nll) P - g_loss e / V - (g_loss (1 - e) + g_nll) onehot(target)``. The
    forward keeps the P terms (``P W``, ``P^T features``, the column sums of P) and the backward
    adds the cheap uniform and one-hot terms. Products run in autocast's dtype when it is on.
    The logits of a training batch on the reference config are 1,900 x 8,000 floats (58 MB; in
    GPU batches of 16k tokens, 0.5 GB) and were written and read several times per step.
    """

    @staticmethod
    def forward(ctx, features: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor,
                smoothing: float) -> Tensor:
        dtype = _product_dtype(features)  # read before autocast is switched off for explicit casts
        with torch.autocast(features.device.type, enabled=False):
            sums, p_terms = _chunked_forward(features, weight, bias, targets, smoothing, dtype, with_grad=True)
        ctx.save_for_backward(features, weight, targets, *p_terms)
        ctx.smoothing, ctx.has_bias = smoothing, bias is not None
        return sums

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        features, weight, targets, p_features, p_weight, p_bias = ctx.saved_tensors
        e, vocab = ctx.smoothing, weight.size(0)
        g_p, g_uniform, g_onehot = _logit_grad_coefficients(grad, e, vocab)
        d_features = (p_features * g_p - g_uniform * weight.sum(0)).sub_(g_onehot * weight.index_select(0, targets))
        d_weight = p_weight * g_p - g_uniform * features.to(p_weight.dtype).sum(0)
        d_weight.index_add_(0, targets, features.to(p_weight.dtype) * -g_onehot)
        d_bias = None
        if ctx.has_bias:
            d_bias = p_bias * g_p - g_uniform * len(targets)
            d_bias.index_add_(0, targets, (-g_onehot).expand(len(targets)))
        return d_features.to(features.dtype), d_weight.to(weight.dtype), d_bias, None, None


def _chunked_forward(features: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, smoothing: float,
                     dtype: torch.dtype, with_grad: bool) -> tuple[Tensor, tuple[Tensor, ...]]:
    """-> the (2,) sums, and with ``with_grad`` the P terms: P W (N, E), P^T features (V, E), sum_n P (V,).

    Sums and P terms are fp32 (fp64 for fp64 inputs, which gradcheck uses) whatever ``dtype`` the products run in.
    """
    x, w = features.to(dtype), weight.to(dtype)
    b = None if bias is None else bias.to(dtype)
    acc = torch.promote_types(torch.float32, dtype)
    sums = torch.zeros(2, dtype=acc, device=features.device)
    p_terms: tuple[Tensor, ...] = ()
    if with_grad:
        p_features = torch.empty(features.shape, dtype=acc, device=features.device)
        p_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device)
        p_bias = torch.zeros(weight.size(0), dtype=acc, device=weight.device)
        p_terms = (p_features, p_weight, p_bias)
    rows = _chunk_rows(weight.size(0), features.device)
    for start in range(0, len(targets), rows):
        x_chunk, chunk_targets = x[start:start + rows], targets[start:start + rows]
        logits = x_chunk @ w.t() if b is None else torch.addmm(b, x_chunk, w.t())
        log_probs = torch.log_softmax(logits, dim=1, dtype=acc)
        nll = -log_probs.gather(1, chunk_targets[:, None])[:, 0].sum()
        sums[0] += (1.0 - smoothing) * nll - smoothing * log_probs.sum() / log_probs.size(1)
        sums[1] += nll
        if with_grad:
            probs = log_probs.exp_()
            p_features[start:start + rows] = probs.to(dtype) @ w
            if dtype == acc:
                p_weight.addmm_(probs.t(), x_chunk)
            else:  # a low-precision product, accumulated over the chunks in fp32
                p_weight += probs.t().to(dtype) @ x_chunk
            if b is not None:  # without a bias its gradient is never read
                p_bias += probs.sum(0)
    return sums, p_terms
