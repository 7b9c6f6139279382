"""The encoder's GRU on the CPU as one autograd node per layer, over the packed data the encoder builds.

PyTorch's CPU GRU over a PackedSequence runs a few small operators per time step and
direction and records each of them for autograd: every per-step slice of the packed input
gets a backward that fills a zero tensor the size of the whole input and adds into it, and
the weight gradients are accumulated step by step. :class:`FusedGRULayer` runs the same
equations (GRU_FACTS.md, 7; the cell is :func:`.fused.gru_cell`) on nn.GRU's own parameters:

- the input products of every token, both directions, are one matrix product before the loop;
- both directions step together: the backward direction reads each sentence's tokens in
  reverse (a permutation of the packed rows, :class:`PackedLayout`), so at step i both
  directions hold the same sentences, the first ``batch_sizes[i]`` of the length-sorted batch,
  and one batched product (D, b, H) x (D, H, 3H) serves both;
- the backward pass walks the steps in reverse for the state gradients only, then computes
  each weight gradient as one product over all N packed rows (as cuDNN does), and the input
  gradient as one product.

Packed semantics follow from the layout itself: a sentence takes exactly its own tokens in
each direction, so the forward direction stops at its last token, the backward one starts
there from h0 = 0, padding is never computed, and h_n is each sentence's state after its
own last step. Matrix products run in the autocast dtype when autocast is on; the state and
the gates stay fp32 (as in :mod:`.fused`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from .gru_cell import gru_cell, gru_cell_backward, product_dtype


@dataclass
class PackedLayout:
    """Where a length-sorted packed batch keeps its tokens: N rows, time-major (as ``PackedSequence.data``).

    ``steps``: per time step t, (first row, rows) = (sum of batch_sizes[:t], batch_sizes[t]);
    ``reverse`` (N,) long: for the row of token t of sentence b, the row of token len_b - 1 - t of b
    (each sentence read backwards; applying it twice gives the identity); ``last`` (B,) long: the row
    of each sentence's last token, where a direction that has read it in its own order ends.
    """

    steps: list[tuple[int, int]]
    reverse: Tensor
    last: Tensor


def packed_layout(batch_sizes: Tensor) -> PackedLayout:
    """The layout of packed data with ``batch_sizes`` (S,) long on the CPU, non-increasing (as packing makes)."""
    sizes = batch_sizes.tolist()
    starts = torch.cumsum(batch_sizes, 0) - batch_sizes
    step_of_row = torch.repeat_interleave(torch.arange(len(sizes)), batch_sizes)
    sentence_of_row = torch.arange(int(batch_sizes.sum())) - starts[step_of_row]
    lengths = (batch_sizes[None, :] > torch.arange(sizes[0])[:, None]).sum(1)
    reverse = starts[lengths[sentence_of_row] - 1 - step_of_row] + sentence_of_row
    return PackedLayout(steps=list(zip(starts.tolist(), sizes)), reverse=reverse,
                        last=starts[lengths - 1] + torch.arange(sizes[0]))


@dataclass
class LayerWeights:
    """One layer's parameters for the loop, detached, the directions stacked (D = 1 or 2).

    ``ih_t`` (D, in, 3H): W_ih transposed; ``hh`` (D, 3H, H) and ``hh_t`` (D, H, 3H): W_hh and a transposed
    copy (the step's small products run a quarter faster on contiguous operands than on transposed views),
    all in the product dtype; ``ih_bias`` and ``hh_bias`` (D, 1, 3H) fp32.
    """

    ih_t: Tensor
    ih_bias: Tensor
    hh: Tensor
    hh_t: Tensor
    hh_bias: Tensor


def layer_weights(params: list[Tensor] | tuple[Tensor, ...], dtype: torch.dtype) -> LayerWeights:
    """nn.GRU's flat weights of one layer (W_ih, W_hh, b_ih, b_hh per direction) arranged for the loop."""
    directions = [params[i:i + 4] for i in range(0, len(params), 4)]
    stacked = [torch.stack([d[i].detach() for d in directions]) for i in range(4)]
    hh = stacked[1].to(dtype)
    return LayerWeights(ih_t=stacked[0].to(dtype).transpose(1, 2), ih_bias=stacked[2].float()[:, None, :],
                        hh=hh, hh_t=hh.transpose(1, 2).contiguous(), hh_bias=stacked[3].float()[:, None, :])


def to_aligned(rows: Tensor, layout: PackedLayout, directions: int) -> Tensor:
    """(N, D*K) in packed order -> (D, N, K): direction 1 moved to the rows of each sentence read backwards."""
    parts = rows.chunk(directions, dim=1)
    if directions == 1:
        return parts[0][None]
    return torch.stack([parts[0], parts[1].index_select(0, layout.reverse)])


def from_aligned(aligned: Tensor, layout: PackedLayout) -> Tensor:
    """The inverse of :func:`to_aligned`: (D, N, K) -> (N, D*K) in packed order."""
    if aligned.size(0) == 1:
        return aligned[0]
    return torch.cat([aligned[0], aligned[1].index_select(0, layout.reverse)], dim=1)


def _baddbmm(bias: Tensor, x: Tensor, weight: Tensor) -> Tensor:
    """bias (D, 1, out) fp32 + x (D, M, in) times weight (D, in, out) in the weight's dtype -> (D, M, out) fp32."""
    if weight.dtype == torch.float32:
        return torch.baddbmm(bias, x, weight)
    return torch.bmm(x.to(weight.dtype), weight).float() + bias


def run_layer(inputs: Tensor, layout: PackedLayout, w: LayerWeights, trace: list[tuple] | None = None
              ) -> list[Tensor]:
    """One GRU layer from h0 = 0, without autograd. inputs (D, N, in): the packed rows, aligned (:func:`to_aligned`).

    Returns per time step t the states (D, batch_sizes[t], H) fp32 after that step, aligned: direction 1
    at step t has read token len_b - 1 - t of sentence b. Fills ``trace`` with each step's gates
    (r, z, n, W_hn h + b_hn) for the backward pass.
    """
    gi = _baddbmm(w.ih_bias, inputs, w.ih_t)  # every step's input product, both directions: (D, N, 3H)
    h = gi.new_zeros(gi.size(0), layout.steps[0][1], w.hh_t.size(1))
    states = []
    for start, rows in layout.steps:
        h = h[:, :rows]  # the sentences still reading: a prefix, since the batch is sorted longest first
        h, gates = gru_cell(gi[:, start:start + rows], _baddbmm(w.hh_bias, h, w.hh_t), h)
        states.append(h)
        if trace is not None:
            trace.append(gates)
    return states


def aligned_inputs(x: Tensor, layout: PackedLayout, directions: int, dtype: torch.dtype) -> Tensor:
    """The packed rows x (N, in) as each direction reads them: (D, N, in) in ``dtype``."""
    x = x.to(dtype)
    if directions == 1:
        return x[None]
    return torch.stack([x, x.index_select(0, layout.reverse)])


def _backward_steps(d_states: Tensor, states: list[Tensor], trace: list[tuple], hh: Tensor,
                    layout: PackedLayout) -> tuple[Tensor, Tensor, Tensor]:
    """The reverse walk: d_states (D, N, H) fp32, the gradient of every aligned state from outside the loop
    (changed in place). Returns the gradients of the input products (D, N, 3H); of the recurrent products,
    each on the row of the state that step started from (D, N, 3H, zero where no step started from it);
    and that of the first step's recurrent product, which started from h0 (D, batch_sizes[0], 3H)."""
    steps = layout.steps
    d_gi = d_states.new_empty(*d_states.shape[:2], hh.size(1))
    d_gh = torch.empty_like(d_gi)
    d_gh[:, steps[-1][0]:].zero_()  # the states after the last step start no step
    for t in range(len(steps) - 1, 0, -1):
        (start, rows), previous = steps[t], steps[t - 1][0]
        d_gh[:, previous + rows:start].zero_()  # nor do those of the sentences that ended at step t - 1
        _, d_gh_t, dh_z = gru_cell_backward(d_states[:, start:start + rows], states[t - 1][:, :rows], *trace[t],
                                            out=(d_gi[:, start:start + rows], d_gh[:, previous:previous + rows]))
        if hh.dtype == torch.float32:
            d_states[:, previous:previous + rows] += torch.baddbmm(dh_z, d_gh_t, hh)
        else:
            d_states[:, previous:previous + rows] += torch.bmm(d_gh_t.to(hh.dtype), hh).float() + dh_z
    rows = steps[0][1]
    _, d_gh_first, _ = gru_cell_backward(d_states[:, :rows], states[0].new_zeros(states[0].shape), *trace[0],
                                         out=(d_gi[:, :rows], None))
    return d_gi, d_gh, d_gh_first


def _forward(x: Tensor, layout: PackedLayout, params: list[Tensor] | tuple[Tensor, ...], trace: list[tuple] | None
             ) -> tuple[LayerWeights, Tensor, list[Tensor], Tensor]:
    """One layer over packed rows x (N, in) without autograd -> its weights and aligned inputs (D, N, in) in the
    product dtype, the states of each step and all of them aligned (D, N, H) fp32 (:func:`run_layer`)."""
    dtype = product_dtype(x.device)
    with torch.autocast(x.device.type, enabled=False):
        w = layer_weights(params, dtype)
        inputs = aligned_inputs(x, layout, w.hh_t.size(0), dtype)
        states = run_layer(inputs, layout, w, trace)
        return w, inputs, states, torch.cat(states, dim=1)


class FusedGRULayer(torch.autograd.Function):
    """One layer of an nn.GRU (one or both directions) over packed rows, as one autograd node.

    apply(x (N, in), layout, *params) -> output (N, D*H) in packed order (as nn.GRU's packed output data),
    h_n (D, B, H) in the packed batch's order; ``params`` are the layer's flat weights as nn.GRU keeps them
    (W_ih, W_hh, b_ih, b_hh, then the same for the reverse direction), the gradients come back for each.
    """

    @staticmethod
    def forward(ctx, x, layout, *params):
        trace: list[tuple] = []
        w, inputs, states, aligned = _forward(x, layout, params, trace)
        # ctx holds no output (an output on ctx would form a cycle output -> grad_fn -> ctx -> output).
        ctx.layout, ctx.w, ctx.inputs, ctx.states, ctx.aligned, ctx.trace = layout, w, inputs, states, aligned, trace
        ctx.x_dtype = x.dtype
        return from_aligned(aligned, layout), aligned.index_select(1, layout.last)

    @staticmethod
    def backward(ctx, d_output, d_h_n):
        layout, w, inputs = ctx.layout, ctx.w, ctx.inputs
        directions = w.hh_t.size(0)
        with torch.autocast(inputs.device.type, enabled=False):
            d_states = to_aligned(d_output.float(), layout, directions)
            if directions == 1:
                d_states = d_states.clone()  # to_aligned returns a view here, and the walk adds into it
            d_states.index_add_(1, layout.last, d_h_n.float())
            d_gi, d_gh, d_gh_first = _backward_steps(d_states, ctx.states, ctx.trace, w.hh, layout)
            dtype = w.ih_t.dtype
            # Each weight gradient as one product over all N rows, both directions in one batched call.
            d_b_ih, d_b_hh = d_gi.sum(1), d_gh.sum(1) + d_gh_first.sum(1)
            d_gi, d_gh = d_gi.to(dtype), d_gh.to(dtype)
            d_w_ih = torch.bmm(d_gi.transpose(1, 2), inputs).float()
            d_w_hh = torch.bmm(d_gh.transpose(1, 2), ctx.aligned.to(dtype)).float()
            d_inputs = torch.bmm(d_gi, w.ih_t.transpose(1, 2)).float()
            d_x = d_inputs[0] if directions == 1 else d_inputs[0].index_add_(0, layout.reverse, d_inputs[1])
        ctx.inputs = ctx.states = ctx.aligned = ctx.trace = None
        grads = []
        for d in range(directions):
            grads += [d_w_ih[d], d_w_hh[d], d_b_ih[d], d_b_hh[d]]
        return (d_x.to(ctx.x_dtype), None, *grads)


def fused_gru(gru: nn.GRU, packed: PackedSequence, training: bool) -> tuple[PackedSequence, Tensor]:
    """``run_gru(gru, packed, training=training)`` from h0 = 0, each layer one :class:`FusedGRULayer`.

    Dropout between layers is drawn as run_gru's per-layer path draws it (``F.dropout`` of the packed
    data, torch's generator), so the masks, and a resumed run, do not depend on which path ran.
    Returns the packed output and h_n (L*D, B, H) in the packed batch's order.
    """
    layout = packed_layout(packed.batch_sizes)
    per_layer = 4 * (2 if gru.bidirectional else 1)
    data, h_n = packed.data, []
    for layer in range(gru.num_layers):
        if layer > 0 and training and gru.dropout > 0:
            data = torch.nn.functional.dropout(data, gru.dropout, training=True)
        params = gru._flat_weights[layer * per_layer:(layer + 1) * per_layer]
        if torch.is_grad_enabled():
            data, h_layer = FusedGRULayer.apply(data, layout, *params)
        else:
            aligned = _forward(data, layout, params, None)[-1]
            data, h_layer = from_aligned(aligned, layout), aligned.index_select(1, layout.last)
        h_n.append(h_layer)
    return PackedSequence(data, packed.batch_sizes), torch.cat(h_n)
