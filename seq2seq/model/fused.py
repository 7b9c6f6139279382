"""The fused step-wise recurrence of the Bahdanau decoder: attention and an L-layer GRU, stepped over T tokens.

The decoder's ``nn.GRU`` holds the parameters (so checkpoints keep their names and shapes);
this module runs PyTorch's GRU equations on them (GRU_FACTS.md, 7), gates stacked r|z|n:

    r = σ(W_ir x + b_ir + W_hr h + b_hr),  z = σ(W_iz x + b_iz + W_hz h + b_hz),
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)),  h' = (1 − z) ⊙ n + z ⊙ h.

What one ``nn.GRU`` call per step cannot do, this does:

- the embedding half of layer 0's input product (``gi_embedded``) arrives computed for all T
  steps by one matrix product before the loop;
- the attention's query projection rides in the top layer's recurrent product: both read the
  previous top state, so one (B, H) x (H, 3H + A) product serves both;
- the masked-softmax bias is built once per batch, the keys once per batch (by the caller);
- :class:`StepwiseRecurrence` is the whole loop as one autograd node. Its backward walks the
  steps in reverse for the state gradients only and then computes every weight gradient as
  one matrix product over all T*B rows, as cuDNN does for full sequences, instead of T small
  accumulations;
- dropout between GRU layers is drawn from torch's generator (:mod:`.dropout`), so a resumed
  run that restores torch's RNG state draws the same masks on the CPU and on CUDA.

Matrix products run in the autocast dtype when autocast is on (bf16: real bf16 products with
fp32 accumulation); the recurrent state, the gates and the softmax stay fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .attention import additive_step, additive_step_backward
from .dropout import scaled_keep_mask
from .gru_cell import add_product, affine, gru_cell, gru_cell_backward, mm_t, product, product_dtype


@dataclass
class LoopWeights:
    """The parameters one step reads, in the product dtype.

    ``top`` (3H + A, H) = [W_hh of the top layer; W_q], ``top_bias`` (3H + A,) (biases stay fp32); ``hh`` / ``hh_bias``:
    W_hh, b_hh of the layers below the top; ``ih`` / ``ih_bias``: W_ih, b_ih of layers 1..L-1;
    ``ih_context`` (3H, C): the context half of layer 0's W_ih; ``energy`` (A,): v of v^T tanh(...).
    """

    top: Tensor
    top_bias: Tensor
    hh: list[Tensor]
    hh_bias: list[Tensor]
    ih: list[Tensor]
    ih_bias: list[Tensor]
    ih_context: Tensor
    energy: Tensor


@dataclass
class LoopTrace:
    """What the backward pass needs from the forward, per step (lists, so the forward copies nothing):
    hiddens[l] T+1 states (B, H), h_0 first; gates[l] T tuples r, z, n, W_hn h + b_hn, each (B, H);
    energies T tensors tanh(q + k) (B, S, A); context (T, B, C) and weights (T, B, S), the loop's outputs."""

    hiddens: list[list[Tensor]]
    gates: list[list[tuple[Tensor, Tensor, Tensor, Tensor]]]
    energies: list[Tensor]
    context: Tensor | None = None
    weights: Tensor | None = None


def layer_dropout(gru: torch.nn.GRU, steps: int, batch: int, device: torch.device, training: bool) -> Tensor | None:
    """nn.GRU's dropout between layers, from torch's generator (resume draws the same): (L-1, T, B, H) or None."""
    if not (training and gru.dropout > 0):
        return None
    return scaled_keep_mask((gru.num_layers - 1, steps, batch, gru.hidden_size), gru.dropout, device)


def gather_weights(gru: torch.nn.GRU, query_proj: torch.nn.Linear, energy: torch.nn.Linear, embedding_size: int,
                   dtype: torch.dtype) -> LoopWeights:
    """The decoder's parameters arranged for the loop (detached; the caller passes the originals to autograd)."""
    top = gru.num_layers - 1
    w = lambda name: getattr(gru, name).detach().to(dtype)  # noqa: E731
    b = lambda name: getattr(gru, name).detach().float()  # noqa: E731  biases are added in fp32
    return LoopWeights(
        top=torch.cat([w(f"weight_hh_l{top}"), query_proj.weight.detach().to(dtype)]),
        top_bias=torch.cat([b(f"bias_hh_l{top}"), query_proj.bias.detach().float()]),
        hh=[w(f"weight_hh_l{k}") for k in range(top)], hh_bias=[b(f"bias_hh_l{k}") for k in range(top)],
        ih=[w(f"weight_ih_l{k}") for k in range(1, top + 1)], ih_bias=[b(f"bias_ih_l{k}") for k in range(1, top + 1)],
        ih_context=w("weight_ih_l0")[:, embedding_size:], energy=energy.weight.detach().to(dtype)[0])


def run_loop(gi_embedded: Tensor, hidden: Tensor, keys: Tensor, values: Tensor, mask_bias: Tensor,
             drop: Tensor | None, w: LoopWeights, trace: LoopTrace | None = None
             ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The forward loop, without autograd. gi_embedded (T, B, 3H) fp32 (b_ih of layer 0 included), hidden (L, B, H),
    keys (B, S, A), values (B, S, C) in the product dtype, mask_bias (B, S) 0 or -inf, drop (L-1, T, B, H) or None.

    Returns top (T, B, H), context (T, B, C), attention weights (T, B, S) and the last hidden (L, B, H), all fp32;
    fills ``trace`` when given.
    """
    steps, layers, size = gi_embedded.size(0), hidden.size(0), hidden.size(2)
    # The backward (this module's, or autograd's through this loop) reads the energies.
    keep_energies = trace is not None or (torch.is_grad_enabled() and any(
        t.requires_grad for t in (gi_embedded, hidden, keys, values, w.top, w.ih_context, w.energy)))
    states = list(hidden.float().unbind(0))
    tops, contexts, all_weights = [], [], []
    for t in range(steps):
        merged = affine(states[-1], w.top, w.top_bias)
        gh_top, query = merged[:, :3 * size], merged[:, 3 * size:]
        context, weights, energies = additive_step(query, keys, values, mask_bias, w.energy, keep_energies)
        x_gi = affine(context, w.ih_context, gi_embedded[t])
        for k in range(layers):
            if k > 0:
                below = states[k - 1] if drop is None else states[k - 1] * drop[k - 1, t]
                x_gi = affine(below, w.ih[k - 1], w.ih_bias[k - 1])
            gh = gh_top if k == layers - 1 else affine(states[k], w.hh[k], w.hh_bias[k])
            states[k], gates = gru_cell(x_gi, gh, states[k])
            if trace is not None:
                trace.hiddens[k].append(states[k])
                trace.gates[k].append(gates)
        if trace is not None:
            trace.energies.append(energies)
        tops.append(states[-1])
        contexts.append(context)
        all_weights.append(weights)
    return torch.stack(tops), torch.stack(contexts), torch.stack(all_weights), torch.stack(states)


def new_trace(hidden: Tensor) -> LoopTrace:
    """An empty trace for a loop starting from hidden (L, B, H)."""
    return LoopTrace(hiddens=[[h] for h in hidden.float().unbind(0)], gates=[[] for _ in range(hidden.size(0))],
                     energies=[])


class StepwiseRecurrence(torch.autograd.Function):
    """The Bahdanau decoder's recurrence over T steps as one autograd node (see the module docstring).

    apply(gi_embedded (T, B, 3H), hidden (L, B, H), keys (B, S, A), values (B, S, C), mask_bias (B, S),
    drop (L-1, T, B, H) or None, embedding_size, gru, query_proj, energy, *params) -> top (T, B, H),
    context (T, B, C), weights (T, B, S) (not differentiable), last hidden (L, B, H); ``params`` are the
    parameters the loop reads (:func:`loop_parameters`), passed so that autograd sees them.
    """

    @staticmethod
    def forward(ctx, gi_embedded, hidden, keys, values, mask_bias, drop, embedding_size, gru, query_proj, energy,
                *params):
        dtype = product_dtype(gi_embedded.device)
        with torch.autocast(gi_embedded.device.type, enabled=False):
            w = gather_weights(gru, query_proj, energy, embedding_size, dtype)
            keys_c, values_c = keys.to(dtype), values.to(dtype)
            trace = new_trace(hidden)
            outputs = run_loop(gi_embedded.float(), hidden, keys_c, values_c, mask_bias, drop, w, trace)
        ctx.trace, ctx.w, ctx.drop = trace, w, drop
        # Outputs only through save_for_backward: on ctx they would form a cycle (output -> grad_fn -> ctx).
        ctx.save_for_backward(keys_c, values_c, outputs[1], outputs[2])
        ctx.dtypes = (gi_embedded.dtype, hidden.dtype, keys.dtype, values.dtype)
        ctx.mark_non_differentiable(outputs[2])
        return outputs

    @staticmethod
    def backward(ctx, d_top, d_context, _d_weights, d_last):
        keys, values, context, weights = ctx.saved_tensors
        trace, w, drop = ctx.trace, ctx.w, ctx.drop
        trace.context, trace.weights = context, weights
        try:
            with torch.autocast(keys.device.type, enabled=False):
                d_gi, d_gh, d_top_q, d_ctx, d_hidden, d_keys, d_energy = _backward_steps(
                    d_top.float(), d_context.float(), d_last.float(), trace, w, keys, values, drop)
                grads = _weight_grads(d_gi, d_gh, d_top_q, d_ctx, trace, drop, w.top.dtype)
                d_values = torch.bmm(weights.permute(1, 2, 0), d_ctx.transpose(0, 1))
        finally:
            trace.context = trace.weights = None  # unpacked outputs point back at this node: no cycle may remain
        gi_dtype, hidden_dtype, keys_dtype, values_dtype = ctx.dtypes
        size = trace.hiddens[0][0].size(1)
        d_top_w, d_top_b = grads.pop("top"), grads.pop("top_bias")
        params = [grads["ih_context"]]
        for k in range(len(trace.hiddens)):
            last = k == len(trace.hiddens) - 1
            params += [d_top_w[:3 * size] if last else grads[f"hh{k}"],
                       d_top_b[:3 * size] if last else grads[f"hhb{k}"]]
        for k in range(1, len(trace.hiddens)):
            params += [grads[f"ih{k}"], grads[f"ihb{k}"]]
        params += [d_top_w[3 * size:], d_top_b[3 * size:], d_energy[None, :]]
        return (d_gi[0].to(gi_dtype), d_hidden.to(hidden_dtype), d_keys.to(keys_dtype), d_values.to(values_dtype),
                None, None, None, None, None, None, *params)


def loop_parameters(gru: torch.nn.GRU, query_proj: torch.nn.Linear, energy: torch.nn.Linear,
                    embedding_size: int) -> list[Tensor]:
    """The parameters :class:`StepwiseRecurrence` reads, in the order its backward returns their gradients."""
    params = [gru.weight_ih_l0[:, embedding_size:]]
    for k in range(gru.num_layers):
        params += [getattr(gru, f"weight_hh_l{k}"), getattr(gru, f"bias_hh_l{k}")]
    for k in range(1, gru.num_layers):
        params += [getattr(gru, f"weight_ih_l{k}"), getattr(gru, f"bias_ih_l{k}")]
    return params + [query_proj.weight, query_proj.bias, energy.weight]


def _backward_steps(d_top: Tensor, d_context: Tensor, d_last: Tensor, trace: LoopTrace, w: LoopWeights,
                    keys: Tensor, values: Tensor, drop: Tensor | None):
    """The reverse walk over time: per-step gradients of the products' outputs, collected for the weight
    gradients, and the gradients of the initial state, the keys and the energy vector."""
    steps, (batch, size) = len(trace.gates[0]), trace.hiddens[0][0].shape
    layers = len(trace.hiddens)
    dh = list(d_last.unbind(0))
    d_gi = [d_top.new_empty(steps, batch, 3 * size) for _ in range(layers)]
    d_gh = [d_top.new_empty(steps, batch, 3 * size) for _ in range(layers - 1)]
    d_top_q = d_top.new_empty(steps, batch, w.top.size(0))
    d_ctx = torch.empty_like(d_context)
    d_keys = torch.zeros(keys.shape, dtype=torch.float32, device=keys.device)
    d_energy = torch.zeros(keys.size(2), dtype=torch.float32, device=keys.device)
    for t in range(steps - 1, -1, -1):
        dh[-1] = dh[-1] + d_top[t]
        for k in range(layers - 1, -1, -1):
            top = k == layers - 1  # its d gh goes to d_top_q, beside the query's gradient
            gi_grad, gh_grad, dh[k] = gru_cell_backward(dh[k], trace.hiddens[k][t], *trace.gates[k][t],
                                                        out=(d_gi[k][t], None if top else d_gh[k][t]))
            if top:
                d_top_q[t, :, :3 * size] = gh_grad
            else:
                dh[k] = add_product(dh[k], gh_grad, w.hh[k])
            if k > 0:
                if drop is None:
                    dh[k - 1] = add_product(dh[k - 1], gi_grad, w.ih[k - 1])
                else:
                    d_below = torch.mm(gi_grad.to(w.ih[k - 1].dtype), w.ih[k - 1]).float()
                    dh[k - 1] = torch.addcmul(dh[k - 1], d_below, drop[k - 1, t])
        torch.add(d_context[t], product(d_gi[0][t], w.ih_context), out=d_ctx[t])
        d_top_q[t, :, 3 * size:] = additive_step_backward(d_ctx[t], trace.energies[t], trace.weights[t], values,
                                                          w.energy, d_keys, d_energy)
        dh[-1] = add_product(dh[-1], d_top_q[t], w.top)
    return d_gi, d_gh, d_top_q, d_ctx, torch.stack(dh), d_keys, d_energy


def _weight_grads(d_gi: list[Tensor], d_gh: list[Tensor], d_top_q: Tensor, d_ctx: Tensor, trace: LoopTrace,
                  drop: Tensor | None, dtype: torch.dtype) -> dict[str, Tensor]:
    """Every weight gradient of the loop as one product over all T*B rows."""
    layers = len(trace.hiddens)
    hiddens = [torch.stack(states) for states in trace.hiddens]  # (T+1, B, H) per layer
    grads = {"ih_context": mm_t(d_gi[0], trace.context, dtype),
             "top": mm_t(d_top_q, hiddens[-1][:-1], dtype), "top_bias": d_top_q.sum((0, 1))}
    for k in range(layers - 1):
        grads[f"hh{k}"], grads[f"hhb{k}"] = mm_t(d_gh[k], hiddens[k][:-1], dtype), d_gh[k].sum((0, 1))
    for k in range(1, layers):
        below = hiddens[k - 1][1:] if drop is None else hiddens[k - 1][1:] * drop[k - 1]
        grads[f"ih{k}"], grads[f"ihb{k}"] = mm_t(d_gi[k], below, dtype), d_gi[k].sum((0, 1))
    return grads
