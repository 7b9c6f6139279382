"""A transparent GRU: recomputes ``nn.GRU`` from its own weights and keeps the gates.

``nn.GRU`` returns only hidden states; the reset gate r, the update gate z and the
candidate n it computed on the way are gone. :func:`transparent_gru` runs PyTorch's
equations (GRU_FACTS.md, item 7) step by step on the weights of a given ``nn.GRU``
(or ``nn.GRUCell``), with the same inputs, and returns the same ``(output, h_n)``
plus, per layer and direction, r, z, n and h at every step:

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h

In this convention z weights the *old* state: z near 1 keeps it, z near 0 rewrites it
with n. The computation is that of eval mode: the dropout ``nn.GRU`` applies between
layers while training is not reproduced.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence


@dataclass(frozen=True)
class CellWeights:
    """The weights of one layer and direction, gates stacked r|z|n as PyTorch stores them.

    weight_ih (3H, in), weight_hh (3H, H), bias_ih / bias_hh (3H,) or None (``bias=False``).
    """

    weight_ih: Tensor
    weight_hh: Tensor
    bias_ih: Tensor | None
    bias_hh: Tensor | None

    @property
    def hidden_size(self) -> int:
        return self.weight_hh.shape[1]


@dataclass(frozen=True)
class DirectionTrace:
    """What one direction of one layer computed, batch-first, in time order (also for the backward direction).

    reset, update, candidate, hidden: (B, S, H). ``hidden`` is the state after each step (the
    layer's output); at padded positions (t >= length) all four are zero.
    """

    reset: Tensor
    update: Tensor
    candidate: Tensor
    hidden: Tensor


@dataclass(frozen=True)
class GRUTrace:
    """The result of :func:`transparent_gru`.

    ``output`` and ``h_n`` are laid out exactly as ``nn.GRU`` returns them (a PackedSequence
    when the input was packed; (L*D, B, H) for ``h_n``). ``layers[k][d]`` is the trace of
    layer k, direction d (0 = forward, 1 = backward); ``lengths`` (B,) the real lengths.
    """

    output: Tensor | PackedSequence
    h_n: Tensor
    layers: list[list[DirectionTrace]]
    lengths: Tensor

    def gate(self, name: str, layer: int, direction: int = 0) -> Tensor:
        """One gate (``reset``, ``update``, ``candidate`` or ``hidden``) of one layer and direction: (B, S, H)."""
        return getattr(self.layers[layer][direction], name)


def gru_weights(gru: nn.GRU) -> list[list[CellWeights]]:
    """The weights of an ``nn.GRU`` as ``[layer][direction]``, read under PyTorch's parameter names."""
    directions = 2 if gru.bidirectional else 1
    layers = []
    for layer in range(gru.num_layers):
        per_direction = []
        for direction in range(directions):
            suffix = f"l{layer}" + ("_reverse" if direction == 1 else "")
            per_direction.append(CellWeights(
                weight_ih=getattr(gru, f"weight_ih_{suffix}"),
                weight_hh=getattr(gru, f"weight_hh_{suffix}"),
                bias_ih=getattr(gru, f"bias_ih_{suffix}", None) if gru.bias else None,
                bias_hh=getattr(gru, f"bias_hh_{suffix}", None) if gru.bias else None))
        layers.append(per_direction)
    return layers


def cell_weights(cell: nn.GRUCell) -> CellWeights:
    """The weights of an ``nn.GRUCell`` (one layer, one direction)."""
    return CellWeights(weight_ih=cell.weight_ih, weight_hh=cell.weight_hh,
                       bias_ih=cell.bias_ih if cell.bias else None, bias_hh=cell.bias_hh if cell.bias else None)


def gru_step(x_proj: Tensor, h: Tensor, weights: CellWeights) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One step of PyTorch's GRU. x_proj = W_i x + b_i (B, 3H), h (B, H) -> r, z, n, h' each (B, H)."""
    h_proj = nn.functional.linear(h, weights.weight_hh, weights.bias_hh)
    x_r, x_z, x_n = x_proj.chunk(3, dim=-1)
    h_r, h_z, h_n = h_proj.chunk(3, dim=-1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    # r gates (W_hn h + b_hn) after the product, not h before it: PyTorch's (and cuDNN's) variant.
    n = torch.tanh(x_n + r * h_n)
    return r, z, n, (1 - z) * n + z * h


def run_direction(x: Tensor, lengths: Tensor, h0: Tensor, weights: CellWeights, reverse: bool) -> DirectionTrace:
    """Run one layer in one direction over padded input. x (B, S, in), lengths (B,), h0 (B, H) -> trace.

    Sentence b only reads its first ``lengths[b]`` steps, as with a PackedSequence: the forward
    state stops changing after the last real token, and the backward direction starts there.
    """
    batch, steps, _ = x.shape
    x_proj = nn.functional.linear(x, weights.weight_ih, weights.bias_ih)  # all steps at once: (B, S, 3H)
    real = torch.arange(steps, device=x.device)[None, :] < lengths.to(x.device)[:, None]  # (B, S)
    records = {name: x.new_zeros(batch, steps, weights.hidden_size) for name in ("reset", "update", "candidate",
                                                                                 "hidden")}
    h = h0
    for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
        r, z, n, h_next = gru_step(x_proj[:, t], h, weights)
        keep = real[:, t, None]
        h = torch.where(keep, h_next, h)
        for name, value in (("reset", r), ("update", z), ("candidate", n), ("hidden", h)):
            records[name][:, t] = torch.where(keep, value, torch.zeros_like(value))
    return DirectionTrace(**records)


def transparent_gru(gru: nn.GRU, inputs: Tensor | PackedSequence, hx: Tensor | None = None) -> GRUTrace:
    """Recompute ``gru(inputs, hx)`` and keep the gates.

    ``inputs`` is what ``gru`` would take: (S, B, in), (B, S, in) when ``gru.batch_first``, or a
    PackedSequence (any order, as from ``enforce_sorted=False``); ``hx`` (L*D, B, H) or None for
    zeros. ``output`` and ``h_n`` of the result equal ``gru``'s to float rounding.
    """
    x, lengths = _to_batch_first(gru, inputs)
    directions = 2 if gru.bidirectional else 1
    batch = x.shape[0]
    if hx is None:
        hx = x.new_zeros(gru.num_layers * directions, batch, gru.hidden_size)
    layers, finals = [], []
    layer_input = x
    for layer, per_direction in enumerate(gru_weights(gru)):
        traces = [run_direction(layer_input, lengths, hx[layer * directions + d], weights, reverse=(d == 1))
                  for d, weights in enumerate(per_direction)]
        layers.append(traces)
        finals.extend(_final_state(trace, lengths, reverse=(d == 1)) for d, trace in enumerate(traces))
        layer_input = torch.cat([trace.hidden for trace in traces], dim=-1)  # (B, S, D*H): next layer's input
    return GRUTrace(output=_like_input(gru, inputs, layer_input, lengths), h_n=torch.stack(finals),
                    layers=layers, lengths=lengths)


def transparent_cell(cell: nn.GRUCell, inputs: Tensor, h0: Tensor) -> DirectionTrace:
    """Run an ``nn.GRUCell`` over a sequence. inputs (B, S, in), h0 (B, H) -> trace with (B, S, H) fields."""
    lengths = torch.full((inputs.shape[0],), inputs.shape[1], dtype=torch.long)
    return run_direction(inputs, lengths, h0, cell_weights(cell), reverse=False)


@dataclass(frozen=True)
class GRUCall:
    """One call of an ``nn.GRU`` as a forward hook saw it: ``output, h_n = gru(inputs, hx)``."""

    inputs: Tensor | PackedSequence
    hx: Tensor | None
    output: Tensor | PackedSequence
    h_n: Tensor


@contextlib.contextmanager
def record_calls(gru: nn.GRU) -> Iterator[list[GRUCall]]:
    """Record every call of ``gru`` inside the ``with`` block, e.g. the steps a decoder takes during search.

    A forward hook sees exactly what the owning module fed the GRU, so nothing of that
    module's own computation (embeddings, attention, input feeding) has to be repeated here.
    """
    calls: list[GRUCall] = []

    def hook(module: nn.Module, args: tuple, kwargs: dict, result: tuple[Tensor, Tensor]) -> None:
        inputs = args[0] if args else kwargs["input"]
        hx = args[1] if len(args) > 1 else kwargs.get("hx")
        calls.append(GRUCall(inputs=inputs, hx=hx, output=result[0], h_n=result[1]))

    handle = gru.register_forward_hook(hook, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def replay_calls(gru: nn.GRU, calls: list[GRUCall]) -> GRUTrace:
    """One trace over consecutive calls of a unidirectional ``gru``, each continuing from the previous ``h_n``.

    That is how a decoder steps: call t+1 starts from the state call t returned. The
    inputs of all calls are joined along time and run from the first call's ``hx``;
    :func:`replay_difference` tells whether that reproduces every call.
    """
    if not calls:
        raise ValueError("replay_calls needs at least one recorded call")
    if gru.bidirectional or any(isinstance(call.inputs, PackedSequence) for call in calls):
        raise ValueError("replay_calls joins the tensor inputs of a unidirectional GRU only; "
                         "run transparent_gru on each call otherwise")
    inputs = torch.cat([call.inputs for call in calls], dim=1 if gru.batch_first else 0)
    return transparent_gru(gru, inputs, calls[0].hx)


def replay_difference(gru: nn.GRU, trace: GRUTrace, calls: list[GRUCall]) -> float:
    """Max |difference| between the replayed states and the ``h_n`` (L, B, H) each recorded call returned."""
    worst, end = 0.0, 0
    for call in calls:
        end += call.inputs.shape[1 if gru.batch_first else 0]
        replayed = torch.stack([layer[0].hidden[:, end - 1] for layer in trace.layers])  # (L, B, H)
        worst = max(worst, (replayed - call.h_n).abs().max().item())
    return worst


def _to_batch_first(gru: nn.GRU, inputs: Tensor | PackedSequence) -> tuple[Tensor, Tensor]:
    """The input as padded (B, S, in) in the caller's sentence order, and the lengths (B,) on the CPU."""
    if isinstance(inputs, PackedSequence):
        return pad_packed_sequence(inputs, batch_first=True)
    if inputs.dim() != 3:
        raise ValueError(f"transparent_gru takes batched input (3 dimensions), got shape {tuple(inputs.shape)}")
    x = inputs if gru.batch_first else inputs.transpose(0, 1)
    return x, torch.full((x.shape[0],), x.shape[1], dtype=torch.long)


def _final_state(trace: DirectionTrace, lengths: Tensor, reverse: bool) -> Tensor:
    """The state after the last step a direction takes: (B, H). Backward ends at t = 0, forward at t = length-1."""
    if reverse:
        return trace.hidden[:, 0]
    last = (lengths - 1).clamp(min=0).to(trace.hidden.device)
    return trace.hidden[torch.arange(trace.hidden.shape[0], device=last.device), last]


def _like_input(gru: nn.GRU, inputs: Tensor | PackedSequence, output: Tensor,
                lengths: Tensor) -> Tensor | PackedSequence:
    """Lay the padded (B, S, D*H) output out as ``gru`` would have for these inputs."""
    if isinstance(inputs, PackedSequence):
        return pack_padded_sequence(output, lengths, batch_first=True, enforce_sorted=False)
    return output if gru.batch_first else output.transpose(0, 1)
