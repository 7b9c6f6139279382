"""What the fused decoder loop (:mod:`.fused`) reads, and what its forward leaves for the backward (:mod:`.fused_backward`)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


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
    ``active`` the rows step t ran (B_t = active[t]); hiddens[l] T+1 states, h_0 (B, H) first, then (B_t, H);
    gates[l] T tuples r, z, n, W_hn h + b_hn, each (B_t, H); energies T tensors tanh(q + k) (B_t, S, A);
    context (T, B, C) and weights (T, B, S), the loop's outputs."""

    active: list[int]
    hiddens: list[list[Tensor]]
    gates: list[list[tuple[Tensor, Tensor, Tensor, Tensor]]]
    energies: list[Tensor]
    context: Tensor | None = None
    weights: Tensor | None = None
