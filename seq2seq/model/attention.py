"""Masked attention over the encoder ``output``: Bahdanau (additive), Luong dot and Luong general.

Each module splits its work in two, so that the source side is paid for once per batch:
``precompute_keys(enc_output)`` turns the encoder output (B, S, C) into keys, and
``forward(query, keys, values, src_mask)`` scores T queries against them. The decoder
calls ``forward`` with T = 1 while it steps, and with the whole target at once when the
attention reads the GRU output (Luong without input feeding).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def masked_softmax(scores: Tensor, src_mask: Tensor) -> Tensor:
    """Softmax over the source of scores (B, T, S), ignoring padding; src_mask (B, S), True = real token.

    Returns float32 weights (B, T, S) that sum to 1 over the real positions and are exactly 0
    on padding. The softmax runs in float32 even under autocast: in bf16 the weights of a
    long source would not sum to 1 and small weights would round to 0.
    """
    scores = scores.float().masked_fill(~src_mask[:, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1)


def softmax_bias(src_mask: Tensor) -> Tensor:
    """src_mask (B, S) bool, True = real token -> (B, S) fp32: 0 on real tokens, -inf on padding, to add to scores."""
    return torch.zeros(src_mask.shape, device=src_mask.device).masked_fill_(~src_mask, float("-inf"))


def weighted_context(weights: Tensor, values: Tensor) -> Tensor:
    """The attention-weighted sum of values: weights (B, T, S), values (B, S, C) -> context (B, T, C)."""
    return torch.bmm(weights.to(values.dtype), values)


def attend_grouped(attention: nn.Module, query: Tensor, keys: Tensor, values: Tensor, src_mask: Tensor
                   ) -> tuple[Tensor, Tensor]:
    """``attention(query, keys, values, src_mask)`` for N = G * B query rows over B sentences: query (N, T, Q)
    -> context (N, T, C), weights (N, T, S); rows n read sentence n // G (search: a sentence's G beams).

    The G rows of a sentence become G * T queries of that sentence, so no key is copied G times.
    """
    rows, steps = query.shape[:2]
    sentences = keys.size(0)
    if rows == sentences:
        return attention(query, keys, values, src_mask)
    context, weights = attention(query.reshape(sentences, -1, query.size(-1)), keys, values, src_mask)
    return context.reshape(rows, steps, -1), weights.reshape(rows, steps, -1)


# --- One step of additive attention for the fused decoder loop (model/fused.py). ---------------------------

ENERGY_CHUNK_ELEMENTS = 1 << 19  # 2 MiB of fp32 energies per chunk: one core's L2 cache holds it


def additive_step(query: Tensor, keys: Tensor, values: Tensor, mask_bias: Tensor, energy: Tensor,
                  keep_energies: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """Additive attention from a projected query (N, A) fp32 over keys (B, S, A) and values (B, S, C), with
    mask_bias (B, S) 0 or -inf and the energy vector v (A,): context (N, C), weights (N, S), both fp32, and
    the energies tanh(q + k) (N, S, A) fp32 when ``keep_energies`` (training keeps them for the backward;
    then N = B).

    Without them (search), N may be a multiple of B: rows n of the queries read sentence n // (N / B),
    so the beams of a sentence share one copy of its keys and values. The energies are then made
    chunk by chunk in one reused buffer: a beam of a thousand hypotheses would otherwise allocate,
    fault in and stream tens of MiB at every step.
    """
    if keep_energies:
        energies = torch.add(query[:, None, :], keys).tanh_()
        scores = torch.matmul(energies.to(energy.dtype), energy).float()
        weights = torch.softmax(scores + mask_bias, dim=-1)
        return torch.bmm(weights[:, None, :].to(values.dtype), values).squeeze(1).float(), weights, energies
    # Search: the G = N / B hypotheses of a sentence (its beams) share its keys: (B, G, S) scores.
    sentences = keys.size(0)
    scores = _chunked_scores(query.view(sentences, -1, query.size(-1)), keys, energy)
    weights = torch.softmax(scores + mask_bias[:, None, :], dim=-1)
    context = torch.bmm(weights.to(values.dtype), values).float()  # (B, G, C)
    return context.view(query.size(0), -1), weights.view(query.size(0), -1), None


def _chunked_scores(query: Tensor, keys: Tensor, energy: Tensor) -> Tensor:
    """v^T tanh(q + k) (B, G, S) fp32 for queries (B, G, A) over keys (B, S, A), ENERGY_CHUNK_ELEMENTS at a time
    in one buffer."""
    rows, group, size = query.shape
    length = keys.size(1)
    # A GPU streams the whole tensor at once; chunks would only add kernel launches there.
    chunk = rows if keys.is_cuda else max(1, ENERGY_CHUNK_ELEMENTS // max(1, group * length * size))
    scores = torch.empty(rows, group, length, dtype=torch.float32, device=keys.device)
    buffer = torch.empty(min(chunk, rows), group, length, size, dtype=torch.float32, device=keys.device)
    for start in range(0, rows, chunk):
        end = min(start + chunk, rows)
        part = torch.add(query[start:end, :, None, :], keys[start:end, None], out=buffer[:end - start]).tanh_()
        scores[start:end] = torch.matmul(part.to(energy.dtype), energy)
    return scores


def additive_step_backward(d_context: Tensor, energies: Tensor, weights: Tensor, values: Tensor, energy: Tensor,
                           d_keys: Tensor, d_energy: Tensor) -> Tensor:
    """One step of :func:`additive_step` backwards: d context (N, C) -> d query (N, A); adds into d_keys (N, S, A)
    and d_energy (A,). energies (N, S, A) = tanh(q + k) as the forward kept them."""
    d_weights = torch.bmm(values, d_context[:, :, None].to(values.dtype)).squeeze(-1).float()
    d_scores = weights * (d_weights - (weights * d_weights).sum(-1, keepdim=True))
    d_energy.add_(torch.mm(d_scores.reshape(1, -1), energies.reshape(-1, energies.size(-1)))[0])
    upstream = d_scores[:, :, None] * energy.float()  # d(score)/d(tanh) = v
    d_pre = torch.addcmul(upstream, upstream * energies, energies, value=-1.0)  # times 1 - tanh^2
    d_keys.add_(d_pre)
    return d_pre.sum(1)


class BahdanauAttention(nn.Module):
    """Additive attention (Bahdanau et al. 2015): score(q, h_s) = v^T tanh(W_q q + W_k h_s)."""

    def __init__(self, *, query_size: int, key_size: int, attention_size: int) -> None:
        super().__init__()
        self.key_proj = nn.Linear(key_size, attention_size, bias=False)
        self.query_proj = nn.Linear(query_size, attention_size)
        self.energy = nn.Linear(attention_size, 1, bias=False)

    def precompute_keys(self, enc_output: Tensor) -> Tensor:
        """W_k h_s for every source position: enc_output (B, S, C) -> keys (B, S, A)."""
        return self.key_proj(enc_output)

    def forward(self, query: Tensor, keys: Tensor, values: Tensor, src_mask: Tensor) -> tuple[Tensor, Tensor]:
        """query (B, T, Q), keys (B, S, A), values (B, S, C), src_mask (B, S).

        Returns context (B, T, C) and float32 weights (B, T, S).
        """
        # (B, T, 1, A) + (B, 1, S, A): every query against every key.
        energies = torch.tanh(self.query_proj(query)[:, :, None, :] + keys[:, None, :, :])
        weights = masked_softmax(self.energy(energies).squeeze(-1), src_mask)
        return weighted_context(weights, values), weights


class LuongAttention(nn.Module):
    """Multiplicative attention (Luong et al. 2015), computed from the decoder GRU's output.

    ``dot``: score(h_t, h_s) = h_t^T h_s (needs the decoder size to equal the encoder output size);
    ``general``: score(h_t, h_s) = h_t^T W_a h_s, with W_a h_s precomputed once per batch.
    """

    def __init__(self, *, query_size: int, key_size: int, general: bool) -> None:
        super().__init__()
        if not general and query_size != key_size:
            raise ValueError(f"dot attention needs query_size == key_size, got {query_size} and {key_size}")
        self.key_proj = nn.Linear(key_size, query_size, bias=False) if general else None

    def precompute_keys(self, enc_output: Tensor) -> Tensor:
        """enc_output (B, S, C) -> keys (B, S, Q): W_a h_s for ``general``, h_s itself for ``dot``."""
        if self.key_proj is None:
            return enc_output
        return self.key_proj(enc_output)

    def forward(self, query: Tensor, keys: Tensor, values: Tensor, src_mask: Tensor) -> tuple[Tensor, Tensor]:
        """query (B, T, Q), keys (B, S, Q), values (B, S, C), src_mask (B, S).

        Returns context (B, T, C) and float32 weights (B, T, S).
        """
        weights = masked_softmax(torch.bmm(query, keys.transpose(1, 2)), src_mask)
        return weighted_context(weights, values), weights


Attention = BahdanauAttention | LuongAttention


def build_attention(kind: str, *, query_size: int, key_size: int) -> Attention | None:
    """The attention module for ``model.attention`` (None for ``none``); Bahdanau's size A is the query size."""
    if kind == "none":
        return None
    if kind == "bahdanau":
        return BahdanauAttention(query_size=query_size, key_size=key_size, attention_size=query_size)
    if kind in ("luong_dot", "luong_general"):
        return LuongAttention(query_size=query_size, key_size=key_size, general=kind == "luong_general")
    raise ValueError(f"unknown attention {kind!r}")
