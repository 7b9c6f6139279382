"""The fused step-wise recurrence of the Luong decoder with input feeding (Luong et al. 2015, section 3.3).

Per step t, on the decoder ``nn.GRU``'s own parameters (PyTorch's GRU equations, as in :mod:`.fused`)
and the readout's (so checkpoints keep their names and shapes):

    x_t = [e_{t-1}; r_{t-1}]  (r_0 = 0),   s_t = the top state of the L-layer GRU on x_t,
    a_t = softmax over the real source positions of s_t . k_s,   c_t = sum_s a_t,s h_s,
    r_t = tanh(W_r [s_t; c_t; e_{t-1}] + b_r),  fed to step t + 1 as it is (dropout only reaches the logits).

The keys k_s are W_a h_s (general) or h_s (dot), computed once per batch by the caller. As for Bahdanau:

- the embedding halves of layer 0's input product and of the readout arrive computed for all T steps
  (``gi_embedded``, ``readout_embedded``), both by one matrix product before the loop;
- :class:`FeedingRecurrence` is the whole loop as one autograd node: its backward walks the steps in
  reverse for the state gradients only, then computes every weight gradient (W_ih, W_hh and biases of
  every layer, the feed half of layer 0's W_ih, the [s_t; c_t] half of W_r) as one product over T*B rows;
- dropout between GRU layers is drawn from torch's generator in :mod:`.fused`'s mask layout;
- matrix products run in the autocast dtype; the state, the gates, the softmax and r_t stay fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .attention import softmax_bias
from .fused import layer_dropout
from .gru_cell import affine, gru_cell, gru_cell_backward, mm_t, product_dtype


@dataclass
class FeedingWeights:
    """The parameters one step reads, in the product dtype (biases fp32).

    ``feed`` (3H, E): the feed half of layer 0's W_ih; ``hh`` / ``hh_bias``: W_hh, b_hh of every layer;
    ``ih`` / ``ih_bias``: W_ih, b_ih of layers 1..L-1; ``readout`` (E, H + C): the [s_t; c_t] half of W_r;
    for one step of search (:func:`feeding_step`), ``ih0`` (3H, 2E) / ``ih0_bias`` and ``readout_all``
    (E, H + C + E) / ``readout_bias``: layer 0's W_ih, b_ih and W_r, b_r whole.
    """

    feed: Tensor
    hh: list[Tensor]
    hh_bias: list[Tensor]
    ih: list[Tensor]
    ih_bias: list[Tensor]
    readout: Tensor
    ih0: Tensor | None = None
    ih0_bias: Tensor | None = None
    readout_all: Tensor | None = None
    readout_bias: Tensor | None = None


@dataclass
class FeedingTrace:
    """What the backward pass needs from the forward, per step (lists, so the forward copies nothing):
    hiddens[l] T+1 states (B, H), h_0 first; gates[l] T tuples r, z, n, W_hn h + b_hn; joined T tensors
    [s_t; c_t] (B, H + C); feeds T+1 tensors r_{t} (B, E), the initial feed first; weights T tensors (B, S)."""

    hiddens: list[list[Tensor]]
    gates: list[list[tuple[Tensor, Tensor, Tensor, Tensor]]]
    joined: list[Tensor]
    feeds: list[Tensor]
    weights: list[Tensor]


@dataclass
class FeedingRun:
    """T steps of the loop, batch first: readout (B, T, E) (r_t, the next feed), top (B, T, H), context (B, T, C),
    attention weights (B, T, S), all fp32, and the last hidden (L, B, H)."""

    readout: Tensor
    top: Tensor
    context: Tensor
    weights: Tensor
    hidden: Tensor


def run_feeding(gru: torch.nn.GRU, readout: torch.nn.Linear, embedded: Tensor, hidden: Tensor, feed: Tensor,
                keys: Tensor, values: Tensor, src_mask: Tensor, training: bool,
                arranged: Callable[[torch.dtype], FeedingWeights]) -> FeedingRun:
    """Input feeding over embedded (B, T, E) (the dropped-out e_{t-1}) from hidden (L, B, H) and feed (B, E);
    keys (B, S, H), values (B, S, C), src_mask (B, S). Through :class:`FeedingRecurrence` while autograd
    records, else the plain loop (:func:`feeding_step` for one step) on ``arranged(dtype)``, once per search."""
    (batch, steps, size), gates = embedded.shape, 3 * gru.hidden_size
    mask_bias = softmax_bias(src_mask)
    drop = layer_dropout(gru, steps, batch, embedded.device, training)  # the mask layout of .fused
    params = feeding_parameters(gru, readout, size) if torch.is_grad_enabled() else []  # search skips the slicing
    differentiable = [embedded, hidden, feed, keys, values, gru.bias_ih_l0, readout.bias, *params]
    recording = bool(params) and any(x.requires_grad for x in differentiable)
    if recording or steps > 1:
        # Both embedding halves in one product over all T steps (stacked: a column slice of a weight multiplies slowly).
        weight = torch.cat([gru.weight_ih_l0[:, :size], readout.weight[:, readout.in_features - size:]])
        part = F.linear(embedded.transpose(0, 1), weight, torch.cat([gru.bias_ih_l0, readout.bias]))
    if recording:
        outputs = FeedingRecurrence.apply(part[..., :gates], part[..., gates:], hidden, feed, keys, values, mask_bias,
                                          drop, size, gru, readout, *params)
    else:
        weights = arranged(product_dtype(embedded.device))
        with torch.autocast(embedded.device.type, enabled=False):
            dtype = weights.feed.dtype
            keys, values = keys.to(dtype), values.to(dtype)
            if steps > 1:
                outputs = run_feeding_loop(part[..., :gates].float(), part[..., gates:].float(), hidden, feed, keys,
                                           values, mask_bias, drop, weights)
            else:
                outputs = feeding_step(embedded[:, 0].float(), hidden, feed, keys, values, mask_bias, drop, weights)
    # The readout batch-first in memory, as the nn.GRU-per-step path made it: the dropout before the output
    # layer draws its mask in memory order, so the same seed drops the same units on both paths.
    readout, top, context, weights = (x.transpose(0, 1) for x in outputs[:4])
    return FeedingRun(readout.contiguous(), top, context, weights, hidden=outputs[4])


def feeding_parameters(gru: torch.nn.GRU, readout: torch.nn.Linear, embedding_size: int) -> list[Tensor]:
    """The parameters :class:`FeedingRecurrence` reads, in the order its backward returns their gradients."""
    params = [gru.weight_ih_l0[:, embedding_size:]]
    for k in range(gru.num_layers):
        params += [getattr(gru, f"weight_hh_l{k}"), getattr(gru, f"bias_hh_l{k}")]
    for k in range(1, gru.num_layers):
        params += [getattr(gru, f"weight_ih_l{k}"), getattr(gru, f"bias_ih_l{k}")]
    return params + [readout.weight[:, :readout.in_features - embedding_size]]


def gather_feeding_weights(gru: torch.nn.GRU, readout: torch.nn.Linear, embedding_size: int,
                           dtype: torch.dtype) -> FeedingWeights:
    """The parameters arranged for the loop (detached; the caller passes the originals to autograd).

    Column slices are copied: a product with a weight whose rows are strided runs at a fraction of the speed."""
    w = lambda name: getattr(gru, name).detach().to(dtype)  # noqa: E731
    b = lambda name: getattr(gru, name).detach().float()  # noqa: E731  biases are added in fp32
    layers = range(gru.num_layers)
    return FeedingWeights(
        feed=w("weight_ih_l0")[:, embedding_size:].contiguous(), hh=[w(f"weight_hh_l{k}") for k in layers],
        hh_bias=[b(f"bias_hh_l{k}") for k in layers], ih=[w(f"weight_ih_l{k}") for k in layers[1:]],
        ih_bias=[b(f"bias_ih_l{k}") for k in layers[1:]],
        readout=readout.weight.detach()[:, :readout.in_features - embedding_size].to(dtype).contiguous(),
        ih0=w("weight_ih_l0"), ih0_bias=b("bias_ih_l0"), readout_all=readout.weight.detach().to(dtype),
        readout_bias=readout.bias.detach().float())


def new_feeding_trace(hidden: Tensor, feed: Tensor) -> FeedingTrace:
    """An empty trace for a loop starting from hidden (L, B, H) and feed (B, E)."""
    return FeedingTrace(hiddens=[[h] for h in hidden.float().unbind(0)], gates=[[] for _ in range(hidden.size(0))],
                        joined=[], feeds=[feed.float()], weights=[])


def _attend(query: Tensor, keys: Tensor, values: Tensor, mask_bias: Tensor) -> tuple[Tensor, Tensor]:
    """Luong attention from query (N, H) fp32 over keys (B, S, H): context (N, C), weights (N, S), fp32; N = G * B,
    row n reads sentence n // G (a sentence's G beams share its keys)."""
    grouped = query.view(keys.size(0), -1, query.size(-1)).to(keys.dtype)  # (B, G, H)
    weights = torch.softmax(torch.bmm(grouped, keys.transpose(1, 2)).float() + mask_bias[:, None, :], dim=-1)
    return torch.bmm(weights.to(values.dtype), values).float().view(len(query), -1), weights.view(len(query), -1)


def run_feeding_loop(gi_embedded: Tensor, readout_embedded: Tensor, hidden: Tensor, feed: Tensor, keys: Tensor,
                     values: Tensor, mask_bias: Tensor, drop: Tensor | None, w: FeedingWeights,
                     trace: FeedingTrace | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The forward loop. gi_embedded (T, B, 3H) and readout_embedded (T, B, E) fp32 (b_ih of layer 0 and b_r
    included), hidden (L, B, H), feed (B, E), keys (B, S, H) and values (B, S, C) in the product dtype,
    mask_bias (B, S) 0 or -inf, drop (L-1, T, B, H) or None.

    Returns readout (T, B, E), top (T, B, H), context (T, B, C), weights (T, B, S), last hidden (L, B, H), all
    fp32; fills ``trace`` when given.
    """
    layers = hidden.size(0)
    states, feed = list(hidden.float().unbind(0)), feed.float()
    readouts, tops, contexts, all_weights = [], [], [], []
    for t in range(gi_embedded.size(0)):
        x_gi = affine(feed, w.feed, gi_embedded[t])
        for k in range(layers):
            if k > 0:
                below = states[k - 1] if drop is None else states[k - 1] * drop[k - 1, t]
                x_gi = affine(below, w.ih[k - 1], w.ih_bias[k - 1])
            states[k], gates = gru_cell(x_gi, affine(states[k], w.hh[k], w.hh_bias[k]), states[k])
            if trace is not None:
                trace.hiddens[k].append(states[k])
                trace.gates[k].append(gates)
        context, weights = _attend(states[-1], keys, values, mask_bias)
        joined = torch.cat([states[-1], context], 1)
        feed = torch.tanh(affine(joined, w.readout, readout_embedded[t]))
        if trace is not None:
            trace.joined.append(joined)
            trace.feeds.append(feed)
            trace.weights.append(weights)
        readouts.append(feed)
        tops.append(states[-1])
        contexts.append(context)
        all_weights.append(weights)
    return (torch.stack(readouts), torch.stack(tops), torch.stack(contexts), torch.stack(all_weights),
            torch.stack(states))


def feeding_step(embedded: Tensor, hidden: Tensor, feed: Tensor, keys: Tensor, values: Tensor, mask_bias: Tensor,
                 drop: Tensor | None, w: FeedingWeights) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One step of :func:`run_feeding_loop` for search, on layer 0's W_ih and W_r whole (as one nn.GRU step
    multiplies them): embedded (B, E) fp32, the rest as there. Returns what it returns, with T = 1."""
    states = list(hidden.float().unbind(0))
    x_gi = affine(torch.cat([embedded, feed.float()], 1), w.ih0, w.ih0_bias)
    for k in range(len(states)):
        if k > 0:
            below = states[k - 1] if drop is None else states[k - 1] * drop[k - 1, 0]
            x_gi = affine(below, w.ih[k - 1], w.ih_bias[k - 1])
        states[k], _ = gru_cell(x_gi, affine(states[k], w.hh[k], w.hh_bias[k]), states[k])
    context, weights = _attend(states[-1], keys, values, mask_bias)
    readout = torch.tanh(affine(torch.cat([states[-1], context, embedded], 1), w.readout_all, w.readout_bias))
    return readout[None], states[-1][None], context[None], weights[None], torch.stack(states)


class FeedingRecurrence(torch.autograd.Function):
    """The input-feeding decoder's recurrence over T steps as one autograd node (see the module docstring).

    apply(gi_embedded (T, B, 3H), readout_embedded (T, B, E), hidden (L, B, H), feed (B, E), keys (B, S, H),
    values (B, S, C), mask_bias (B, S), drop (L-1, T, B, H) or None, embedding_size, gru, readout, *params)
    -> readout (T, B, E), top (T, B, H), context (T, B, C), weights (T, B, S) (not differentiable), last
    hidden (L, B, H); ``params`` are :func:`feeding_parameters`, passed so that autograd sees them.
    """

    @staticmethod
    def forward(ctx, gi_embedded, readout_embedded, hidden, feed, keys, values, mask_bias, drop, embedding_size,
                gru, readout, *params):
        dtype = product_dtype(gi_embedded.device)
        with torch.autocast(gi_embedded.device.type, enabled=False):
            w = gather_feeding_weights(gru, readout, embedding_size, dtype)
            keys_c, values_c = keys.to(dtype), values.to(dtype)
            trace = new_feeding_trace(hidden, feed)
            outputs = run_feeding_loop(gi_embedded.float(), readout_embedded.float(), hidden, feed, keys_c,
                                       values_c, mask_bias, drop, w, trace)
        # The stacked outputs are new tensors, so the trace on ctx holds no output (no reference cycle).
        ctx.trace, ctx.w, ctx.drop = trace, w, drop
        ctx.save_for_backward(keys_c, values_c)
        ctx.dtypes = tuple(x.dtype for x in (gi_embedded, readout_embedded, hidden, feed, keys, values))
        ctx.mark_non_differentiable(outputs[3])
        return outputs

    @staticmethod
    def backward(ctx, d_readout, d_top, d_context, _d_weights, d_last):
        keys, values = ctx.saved_tensors
        trace, w, drop = ctx.trace, ctx.w, ctx.drop
        with torch.autocast(keys.device.type, enabled=False):
            steps = _backward_steps(d_readout.float(), d_top.float(), d_context.float(), d_last.float(), trace, w,
                                    keys, values, drop)
            d_gi, d_gh, d_pre, d_scores, d_ctx, d_hidden, d_feed = steps
            params = _weight_grads(d_gi, d_gh, d_pre, trace, drop, w.feed.dtype)
            weights = torch.stack(trace.weights, 1)  # (B, T, S)
            tops = torch.stack(trace.hiddens[-1][1:], 1)  # (B, T, H)
            d_keys = torch.bmm(d_scores.permute(1, 2, 0), tops)  # (B, S, T) x (B, T, H)
            d_values = torch.bmm(weights.transpose(1, 2), d_ctx.transpose(0, 1))
        grads = (d_gi[0], d_pre, d_hidden, d_feed, d_keys, d_values)
        return (*(g.to(dtype) for g, dtype in zip(grads, ctx.dtypes)), None, None, None, None, None, *params)


def _backward_steps(d_readout: Tensor, d_top: Tensor, d_context: Tensor, d_last: Tensor, trace: FeedingTrace,
                    w: FeedingWeights, keys: Tensor, values: Tensor, drop: Tensor | None):
    """The reverse walk over time: per-step gradients of the products' outputs (d gi, d gh per layer, d of the
    readout's pre-activation, d scores (T, B, S), d context (T, B, C)), kept for the weight gradients, and the
    gradients of the initial hidden state and feed."""
    steps, (batch, size), layers = len(trace.weights), trace.hiddens[0][0].shape, len(trace.hiddens)
    dh = list(d_last.unbind(0))
    d_gi = [d_top.new_empty(steps, batch, 3 * size) for _ in range(layers)]
    d_gh = [d_top.new_empty(steps, batch, 3 * size) for _ in range(layers)]
    d_pre, d_ctx = torch.empty_like(d_readout), torch.empty_like(d_context)
    d_scores = d_top.new_empty(steps, batch, keys.size(1))
    d_feed = torch.zeros_like(trace.feeds[0])
    for t in range(steps - 1, -1, -1):
        readout = trace.feeds[t + 1]
        d_pre[t] = (d_readout[t] + d_feed) * (1 - readout * readout)
        d_joined = torch.mm(d_pre[t].to(w.readout.dtype), w.readout).float()
        d_ctx[t] = d_context[t] + d_joined[:, size:]
        weights = trace.weights[t]
        d_weights = torch.bmm(values, d_ctx[t][:, :, None].to(values.dtype)).squeeze(-1).float()
        d_scores[t] = weights * (d_weights - (weights * d_weights).sum(-1, keepdim=True))
        d_query = torch.bmm(d_scores[t][:, None, :].to(keys.dtype), keys).squeeze(1).float()
        dh[-1] = dh[-1] + d_top[t] + d_joined[:, :size] + d_query
        for k in range(layers - 1, -1, -1):
            d_gi[k][t], d_gh[k][t], dh[k] = gru_cell_backward(dh[k], trace.hiddens[k][t], *trace.gates[k][t])
            dh[k] = dh[k] + torch.mm(d_gh[k][t].to(w.hh[k].dtype), w.hh[k]).float()
            if k > 0:
                d_below = torch.mm(d_gi[k][t].to(w.ih[k - 1].dtype), w.ih[k - 1]).float()
                dh[k - 1] = dh[k - 1] + (d_below if drop is None else d_below * drop[k - 1, t])
        d_feed = torch.mm(d_gi[0][t].to(w.feed.dtype), w.feed).float()
    return d_gi, d_gh, d_pre, d_scores, d_ctx, torch.stack(dh), d_feed


def _weight_grads(d_gi: list[Tensor], d_gh: list[Tensor], d_pre: Tensor, trace: FeedingTrace,
                  drop: Tensor | None, dtype: torch.dtype) -> list[Tensor]:
    """Every weight gradient of the loop as one product over all T*B rows, in :func:`feeding_parameters`' order."""
    layers = len(trace.hiddens)
    hiddens = [torch.stack(states) for states in trace.hiddens]  # (T+1, B, H) per layer
    grads = [mm_t(d_gi[0], torch.stack(trace.feeds[:-1]), dtype)]
    for k in range(layers):
        grads += [mm_t(d_gh[k], hiddens[k][:-1], dtype), d_gh[k].sum((0, 1))]
    for k in range(1, layers):
        below = hiddens[k - 1][1:] if drop is None else hiddens[k - 1][1:] * drop[k - 1]
        grads += [mm_t(d_gi[k], below, dtype), d_gi[k].sum((0, 1))]
    return grads + [mm_t(d_pre, torch.stack(trace.joined), dtype)]
