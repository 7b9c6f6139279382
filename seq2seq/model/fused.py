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
- :class:`StepwiseRecurrence` is the whole loop as one autograd node. Its backward
  (:mod:`.fused_backward`) walks the steps in reverse for the state gradients only and then
  computes every weight gradient as one matrix product over all rows, as cuDNN does for full
  sequences, instead of T small accumulations;
- padding is not computed (:func:`stepwise_recurrence`): with the rows sorted longest target
  first, step t runs only the sentences still open, as packed sequences do. A batch of
  Multi30k holds about 7 % padding in its targets, a batch of a corpus with more varied
  lengths more;
- dropout between GRU layers is drawn from torch's generator (:mod:`.dropout`), so a resumed
  run that restores torch's RNG state draws the same masks on the CPU and on CUDA.

Matrix products run in the autocast dtype when autocast is on (bf16: real bf16 products with
fp32 accumulation); the recurrent state, the gates and the softmax stay fp32.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .attention import additive_step
from .dropout import scaled_keep_mask
from .fused_backward import backward_steps, unpacked, weight_grads, zero_ended
from .fused_types import LoopTrace, LoopWeights
from .gru_cell import affine, gru_cell, product_dtype


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
             drop: Tensor | None, w: LoopWeights, trace: LoopTrace | None = None, active: list[int] | None = None
             ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The forward loop, without autograd. gi_embedded (T, B, 3H) fp32 (b_ih of layer 0 included), hidden (L, B, H),
    keys (B, S, A), values (B, S, C) in the product dtype, mask_bias (B, S) 0 or -inf, drop (L-1, T, B, H) or None.

    ``active`` (T,) non-increasing: step t runs only the first active[t] rows (the sentences whose targets
    are that long, sorted longest first); None: every row at every step.

    Returns top (T, B, H), context (T, B, C), attention weights (T, B, S), zero where a row has ended, and each
    row's hidden state (L, B, H) after its last step, all fp32; fills ``trace`` when given.
    """
    steps, layers, size = gi_embedded.size(0), hidden.size(0), hidden.size(2)
    active = [hidden.size(1)] * steps if active is None else active
    # The backward (this module's, or autograd's through this loop) reads the energies.
    keep_energies = trace is not None or (torch.is_grad_enabled() and any(
        t.requires_grad for t in (gi_embedded, hidden, keys, values, w.top, w.ih_context, w.energy)))
    states = list(hidden.float().unbind(0))
    ended: list[list[Tensor]] = [[] for _ in range(layers)]  # last states of the rows that stopped, last rows first
    tops, contexts, all_weights = [], [], []
    for t, rows in enumerate(active):
        if rows < states[0].size(0):
            for k in range(layers):
                ended[k].append(states[k][rows:])
            states = [state[:rows] for state in states]
            keys, values, mask_bias = keys[:rows], values[:rows], mask_bias[:rows]
        merged = affine(states[-1], w.top, w.top_bias)
        gh_top, query = merged[:, :3 * size], merged[:, 3 * size:]
        context, weights, energies = additive_step(query, keys, values, mask_bias, w.energy, keep_energies)
        x_gi = affine(context, w.ih_context, gi_embedded[t, :rows])
        for k in range(layers):
            if k > 0:
                below = states[k - 1] if drop is None else states[k - 1] * drop[k - 1, t, :rows]
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
    last = torch.stack([torch.cat([state, *reversed(rows)]) for state, rows in zip(states, ended)])
    batch = hidden.size(1)
    return _stacked(tops, batch), _stacked(contexts, batch), _stacked(all_weights, batch), last


def _stacked(per_step: list[Tensor], batch: int) -> Tensor:
    """(B_t, D) per step -> (T, B, D), zeros below the B_t rows of each step."""
    if all(x.size(0) == batch for x in per_step):
        return torch.stack(per_step)
    out = zero_ended(per_step[0].new_empty(len(per_step), batch, per_step[0].size(-1)), [x.size(0) for x in per_step])
    for t, x in enumerate(per_step):
        out[t, :x.size(0)] = x
    return out


def new_trace(hidden: Tensor, active: list[int]) -> LoopTrace:
    """An empty trace for a loop starting from hidden (L, B, H) that runs ``active[t]`` rows at step t."""
    return LoopTrace(active=active, hiddens=[[h] for h in hidden.float().unbind(0)],
                     gates=[[] for _ in range(hidden.size(0))], energies=[])


def active_rows(lengths: Tensor, steps: int) -> list[int]:
    """How many of the rows, sorted longest first, run at each of ``steps`` steps: lengths (B,) CPU long."""
    return (lengths[:, None] > torch.arange(steps)[None, :]).sum(0).tolist()


def stepwise_recurrence(gi_embedded: Tensor, hidden: Tensor, keys: Tensor, values: Tensor, mask_bias: Tensor,
                        drop: Tensor | None, lengths: Tensor | None, embedding_size: int, gru: torch.nn.GRU,
                        query_proj: torch.nn.Linear, energy: torch.nn.Linear, params: list[Tensor]
                        ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:class:`StepwiseRecurrence` over real positions only. ``lengths`` (B,) CPU long, each row's target length
    (BOS included; None: all T): the rows run longest first (permuted there and back when they are not in
    that order) and step t computes only the rows still open. Outputs are zero where a row has ended and
    the last hidden is each row's state after its own last step."""
    steps, batch = gi_embedded.shape[:2]
    if lengths is None or bool((lengths >= steps).all()):
        return StepwiseRecurrence.apply(gi_embedded, hidden, keys, values, mask_bias, drop, None, embedding_size,
                                        gru, query_proj, energy, *params)
    order = torch.sort(lengths, descending=True, stable=True).indices
    active = active_rows(lengths[order], steps)
    if not bool((order == torch.arange(batch)).all()):
        order = order.to(gi_embedded.device)
        gi_embedded, hidden = gi_embedded.index_select(1, order), hidden.index_select(1, order)
        keys, values, mask_bias = (x.index_select(0, order) for x in (keys, values, mask_bias))
        drop = None if drop is None else drop.index_select(2, order)
    else:
        order = None
    outputs = StepwiseRecurrence.apply(gi_embedded, hidden, keys, values, mask_bias, drop, active, embedding_size,
                                       gru, query_proj, energy, *params)
    if order is None:
        return outputs
    restore = torch.empty_like(order)
    restore[order] = torch.arange(batch, device=order.device)
    return tuple(x.index_select(1, restore) for x in outputs)


class StepwiseRecurrence(torch.autograd.Function):
    """The Bahdanau decoder's recurrence over T steps as one autograd node (see the module docstring).

    apply(gi_embedded (T, B, 3H), hidden (L, B, H), keys (B, S, A), values (B, S, C), mask_bias (B, S),
    drop (L-1, T, B, H) or None, active (:func:`run_loop`) or None, embedding_size, gru, query_proj, energy,
    *params) -> top (T, B, H), context (T, B, C), weights (T, B, S) (not differentiable), last hidden (L, B, H);
    ``params`` are the parameters the loop reads (:func:`loop_parameters`), passed so that autograd sees them.
    """

    @staticmethod
    def forward(ctx, gi_embedded, hidden, keys, values, mask_bias, drop, active, embedding_size, gru, query_proj,
                energy, *params):
        dtype = product_dtype(gi_embedded.device)
        with torch.autocast(gi_embedded.device.type, enabled=False):
            w = gather_weights(gru, query_proj, energy, embedding_size, dtype)
            keys_c, values_c = keys.to(dtype), values.to(dtype)
            trace = new_trace(hidden, [hidden.size(1)] * gi_embedded.size(0) if active is None else active)
            outputs = run_loop(gi_embedded.float(), hidden, keys_c, values_c, mask_bias, drop, w, trace, trace.active)
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
                d_gi, d_gh, d_top_q, d_ctx, d_hidden, d_keys, d_energy = backward_steps(
                    d_top.float(), d_context.float(), d_last.float(), trace, w, keys, values, drop)
                grads = weight_grads(d_gi, d_gh, d_top_q, trace, drop, w.top.dtype)
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
        d_gi_embedded = unpacked(d_gi[0], trace.active, d_hidden.size(1))
        return (d_gi_embedded.to(gi_dtype), d_hidden.to(hidden_dtype), d_keys.to(keys_dtype),
                d_values.to(values_dtype), None, None, None, None, None, None, None, *params)


def loop_parameters(gru: torch.nn.GRU, query_proj: torch.nn.Linear, energy: torch.nn.Linear,
                    embedding_size: int) -> list[Tensor]:
    """The parameters :class:`StepwiseRecurrence` reads, in the order its backward returns their gradients."""
    params = [gru.weight_ih_l0[:, embedding_size:]]
    for k in range(gru.num_layers):
        params += [getattr(gru, f"weight_hh_l{k}"), getattr(gru, f"bias_hh_l{k}")]
    for k in range(1, gru.num_layers):
        params += [getattr(gru, f"weight_ih_l{k}"), getattr(gru, f"bias_ih_l{k}")]
    return params + [query_proj.weight, query_proj.bias, energy.weight]
