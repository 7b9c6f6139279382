"""The backward pass of :class:`.fused.StepwiseRecurrence`: a reverse walk over time for the state gradients,
then every weight gradient of the loop as one matrix product over all its rows.

The rows are packed time-major, as ``PackedSequence.data``: step t owns ``active[t]`` consecutive
rows, the first ``active[t]`` sentences of the batch (longest target first). Without padding
that is every sentence at every step, and the layout is (T, B) flattened.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .attention import additive_step_backward
from .fused_types import LoopTrace, LoopWeights
from .gru_cell import add_product, gru_cell_backward, mm_t, product


def row_starts(active: list[int]) -> list[int]:
    """The first packed row of each step: the running sum of ``active``."""
    starts, total = [], 0
    for rows in active:
        starts.append(total)
        total += rows
    return starts


def packed(per_step: list[Tensor] | tuple[Tensor, ...], active: list[int]) -> Tensor:
    """Rows 0..active[t] of each step's (B_t, D) tensor, concatenated time-major -> (sum(active), D)."""
    return torch.cat([x[:rows] for x, rows in zip(per_step, active)])


def unpacked(rows: Tensor, active: list[int], batch: int) -> Tensor:
    """The inverse of :func:`packed` for (T, B, D) with zeros where a sentence has ended."""
    if all(count == batch for count in active):
        return rows.view(len(active), batch, -1)
    out = zero_ended(rows.new_empty(len(active), batch, rows.size(-1)), active)
    for t, (start, count) in enumerate(zip(row_starts(active), active)):
        out[t, :count] = rows[start:start + count]
    return out


def zero_ended(out: Tensor, active: list[int]) -> Tensor:
    """out (T, B, D) with zeros in the rows past active[t] of each step (only those: filling all of it costs more)."""
    for t, count in enumerate(active):
        if count < out.size(1):
            out[t, count:] = 0
    return out


def backward_steps(d_top: Tensor, d_context: Tensor, d_last: Tensor, trace: LoopTrace, w: LoopWeights,
                   keys: Tensor, values: Tensor, drop: Tensor | None):
    """The reverse walk over time: per-step gradients of the products' outputs (packed rows), collected for the
    weight gradients, and the gradients of the initial state, the keys and the energy vector.

    A sentence's rows join the walk at its last step, where the gradient of its last hidden state enters.
    """
    active, size = trace.active, trace.hiddens[0][0].size(1)
    layers, starts, total = len(trace.hiddens), row_starts(trace.active), sum(trace.active)
    last = d_last.unbind(0)
    dh = [d[:active[-1]] for d in last]
    d_gi = [d_top.new_empty(total, 3 * size) for _ in range(layers)]
    d_gh = [d_top.new_empty(total, 3 * size) for _ in range(layers - 1)]
    d_top_q = d_top.new_empty(total, w.top.size(0))
    d_ctx = zero_ended(torch.empty_like(d_context), active)
    d_keys = torch.zeros(keys.shape, dtype=torch.float32, device=keys.device)
    d_energy = torch.zeros(keys.size(2), dtype=torch.float32, device=keys.device)
    for t in range(len(active) - 1, -1, -1):
        n, rows = active[t], slice(starts[t], starts[t] + active[t])
        if n > dh[0].size(0):
            dh = [torch.cat([d, whole[d.size(0):n]]) for d, whole in zip(dh, last)]
        dh[-1] = dh[-1] + d_top[t, :n]
        for k in range(layers - 1, -1, -1):
            top = k == layers - 1  # its d gh goes to d_top_q, beside the query's gradient
            gi_grad, gh_grad, dh[k] = gru_cell_backward(dh[k], trace.hiddens[k][t][:n], *trace.gates[k][t],
                                                        out=(d_gi[k][rows], None if top else d_gh[k][rows]))
            if top:
                d_top_q[rows, :3 * size] = gh_grad
            else:
                dh[k] = add_product(dh[k], gh_grad, w.hh[k])
            if k > 0:
                if drop is None:
                    dh[k - 1] = add_product(dh[k - 1], gi_grad, w.ih[k - 1])
                else:
                    d_below = torch.mm(gi_grad.to(w.ih[k - 1].dtype), w.ih[k - 1]).float()
                    dh[k - 1] = torch.addcmul(dh[k - 1], d_below, drop[k - 1, t, :n])
        torch.add(d_context[t, :n], product(d_gi[0][rows], w.ih_context), out=d_ctx[t, :n])
        d_top_q[rows, 3 * size:] = additive_step_backward(d_ctx[t, :n], trace.energies[t], trace.weights[t, :n],
                                                          values[:n], w.energy, d_keys[:n], d_energy)
        dh[-1] = add_product(dh[-1], d_top_q[rows], w.top)
    d_hidden = torch.stack([torch.cat([d, whole[d.size(0):]]) for d, whole in zip(dh, last)])
    return d_gi, d_gh, d_top_q, d_ctx, d_hidden, d_keys, d_energy


def weight_grads(d_gi: list[Tensor], d_gh: list[Tensor], d_top_q: Tensor, trace: LoopTrace, drop: Tensor | None,
                 dtype: torch.dtype) -> dict[str, Tensor]:
    """Every weight gradient of the loop as one product over all packed rows."""
    active, layers = trace.active, len(trace.hiddens)
    before = [packed(states, active) for states in trace.hiddens]  # the state each step starts from
    grads = {"ih_context": mm_t(d_gi[0], packed(trace.context, active), dtype),
             "top": mm_t(d_top_q, before[-1], dtype), "top_bias": d_top_q.sum(0)}
    for k in range(layers - 1):
        grads[f"hh{k}"], grads[f"hhb{k}"] = mm_t(d_gh[k], before[k], dtype), d_gh[k].sum(0)
    for k in range(1, layers):
        after = trace.hiddens[k - 1][1:]
        below = packed(after if drop is None else [h * m[:h.size(0)] for h, m in zip(after, drop[k - 1])], active)
        grads[f"ih{k}"], grads[f"ihb{k}"] = mm_t(d_gi[k], below, dtype), d_gi[k].sum(0)
    return grads
