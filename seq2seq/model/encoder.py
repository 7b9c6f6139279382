"""The encoder: embedding + multi-layer (bi)GRU over packed sequences, returning ``(output, h_n)`` as nn.GRU does.

Packing is what makes padding harmless: ``h_n`` is each sentence's state at its own last
real token, the backward direction starts at that token, and the padded positions of
``output`` are zeros. Without it the GRU reads the pad tokens and both ``h_n`` and the
backward states depend on the batch a sentence is in.

On CUDA nothing here waits for the GPU: the batch is sorted longest-first from its CPU
lengths (``enforce_sorted=False`` would copy its permutation to the GPU and back with blocking
copies), and the permutations travel through pinned memory. Under bf16 autocast on CUDA the
GRUs run in fp32 (:func:`run_gru`). In training with dropout between layers the layers run
one call each, with the dropout drawn from torch's generator (cuDNN's multi-layer call keeps
a dropout state of its own, which a resumed run cannot restore exactly).

On the CPU while autograd records (training), the same packed data runs through
:func:`.fused_encoder.fused_gru` instead (:func:`fused_pays`): the same equations and
parameters, one autograd node per layer instead of several per time step and direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ..device import to_device_async
from .dropout import EmbeddingDropout
from .fused_encoder import fused_gru


@dataclass
class EncoderOutput:
    """What the decoder reads from the source, for a batch of B sentences.

    ``output`` (B, S, D*H): the top layer at every source position (zeros on padding);
    ``h_n`` (L*D, B, H): every layer at each sentence's last token, laid out as nn.GRU does;
    ``src_mask`` (B, S) bool, True = real token; ``keys``: the attention keys computed once
    per batch (B, S, A), or None without attention.
    """

    output: Tensor
    h_n: Tensor
    src_mask: Tensor
    keys: Tensor | None

    def index_select(self, idx: Tensor) -> EncoderOutput:
        """Select, reorder or repeat sentences by batch index idx (B',) long, e.g. to expand to K beams."""
        return EncoderOutput(
            output=self.output.index_select(0, idx),
            h_n=self.h_n.index_select(1, idx),  # h_n is never batch-first: its batch dim is 1
            src_mask=self.src_mask.index_select(0, idx),
            keys=None if self.keys is None else self.keys.index_select(0, idx),
        )

    def for_rows(self, rows: int) -> EncoderOutput:
        """This encoding with a row per hypothesis for ``rows`` = G * B hypothesis rows, G consecutive ones per
        sentence (beam search shares a sentence's row among its beams; autograd paths want one each)."""
        sentences = self.output.size(0)
        if rows == sentences:
            return self
        per_sentence = torch.arange(sentences, device=self.output.device).repeat_interleave(rows // sentences)
        return self.index_select(per_sentence)


def cpu_lengths(lengths: Tensor) -> Tensor:
    """lengths (B,) as int64 on the CPU, as pack_padded_sequence needs; no device sync if already there."""
    if lengths.device.type == "cpu":
        return lengths.long()
    return lengths.to("cpu", torch.long)


def run_gru(gru: nn.GRU, inputs: Tensor | PackedSequence, hidden: Tensor | None = None, training: bool = False
            ) -> tuple[Tensor | PackedSequence, Tensor]:
    """``gru(inputs, hidden)`` (batch-first or packed), with two changes of how it runs, not of what it computes.

    - Under CUDA bf16 autocast it runs in fp32: CUDA autocast's cuDNN RNN wrapper casts to fp16
      whatever dtype autocast was asked for (aten/src/ATen/cudnn/AutocastRNN.cpp), and bf16
      training has no gradient scaler, so gradients divided by thousands of tokens would underflow.
    - In training with dropout between layers it runs one call per layer and draws that dropout
      from torch's generator, exactly as nn.GRU's CPU path does; cuDNN's multi-layer call keeps
      a dropout state of its own, which a resumed run cannot restore.
    """
    data = inputs.data if isinstance(inputs, PackedSequence) else inputs
    if data.is_cuda and torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda") == torch.bfloat16:
        with torch.autocast("cuda", enabled=False):
            return run_gru(gru, inputs.float(), None if hidden is None else hidden.float(), training)
    if not (training and gru.dropout > 0 and gru.num_layers > 1):
        return gru(inputs, hidden)
    directions = 2 if gru.bidirectional else 1
    per_layer, h_n = 4 * directions, []
    for layer in range(gru.num_layers):
        if layer > 0:
            data = torch.nn.functional.dropout(data, gru.dropout, training=True)
        weights = gru._flat_weights[layer * per_layer:(layer + 1) * per_layer]
        start = hidden[layer * directions:(layer + 1) * directions] if hidden is not None else None
        data, h_layer = _one_layer(gru, weights, data, inputs, start)
        h_n.append(h_layer)
    output = PackedSequence(data, inputs.batch_sizes) if isinstance(inputs, PackedSequence) else data
    return output, torch.cat(h_n)


def _one_layer(gru: nn.GRU, weights: list[Tensor], data: Tensor, inputs: Tensor | PackedSequence,
               hidden: Tensor | None) -> tuple[Tensor, Tensor]:
    """One layer of ``gru`` (both directions) with its flat weights, as nn.GRU runs it: data is the packed
    data (N, in) when ``inputs`` is packed, else (B, T, in). Returns the layer's output and h_n (D, B, H)."""
    directions = 2 if gru.bidirectional else 1
    if isinstance(inputs, PackedSequence):
        batch = int(inputs.batch_sizes[0])  # batch_sizes live on the CPU: no device sync
    else:
        batch = data.size(0)
    if hidden is None:
        hidden = data.new_zeros(directions, batch, gru.hidden_size)
    if isinstance(inputs, PackedSequence):
        return torch._VF.gru(data, inputs.batch_sizes, hidden, weights, gru.bias, 1, 0.0, True, gru.bidirectional)
    return torch._VF.gru(data, hidden, weights, gru.bias, 1, 0.0, True, gru.bidirectional, True)


def fused_pays(gru: nn.GRU, inputs: Tensor) -> bool:
    """Whether :func:`.fused_encoder.fused_gru` runs ``gru`` here: on the CPU while autograd records (training),
    where it saves nn.GRU's per-step autograd work. Search (no_grad) keeps nn.GRU, which is faster there; CUDA
    keeps cuDNN; and a hook on the nn.GRU (inspection records its calls) sees the calls it expects. The fused
    layers keep fp32 parameters (their gradients come back fp32), as training keeps them under autocast."""
    return (inputs.device.type == "cpu" and torch.is_grad_enabled() and gru.bias
            and gru.weight_hh_l0.dtype == torch.float32 and not (gru._forward_hooks or gru._forward_pre_hooks))


def join_directions(h_n: Tensor, num_layers: int, bidirectional: bool) -> Tensor:
    """h_n (L*D, B, H) -> (L, B, D*H): per layer, the forward and backward final states side by side.

    ``h_n.view(L, D, B, H)`` is layer-major with the direction second (0 = forward,
    1 = backward), so ``h_n[-1]`` alone would be only the top layer's backward state.
    """
    num_directions = 2 if bidirectional else 1
    _, batch_size, hidden_size = h_n.shape
    per_layer = h_n.view(num_layers, num_directions, batch_size, hidden_size)
    if num_directions == 1:
        return per_layer[:, 0]
    return torch.cat([per_layer[:, 0], per_layer[:, 1]], dim=-1)


class Encoder(nn.Module):
    """Embedding, dropout (of elements, and of whole tokens with ``word_dropout``), then an ``num_layers``-deep
    (bi)GRU with ``hidden_size`` units per direction."""

    def __init__(self, *, embedding: nn.Embedding, hidden_size: int, num_layers: int,
                 bidirectional: bool, dropout: float, word_dropout: float = 0.0) -> None:
        super().__init__()
        self.embedding = embedding
        self.embedding_dropout = EmbeddingDropout(dropout, word_dropout)
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        # nn.GRU's dropout acts between layers only (and warns when there is a single layer).
        self.gru = nn.GRU(embedding.embedding_dim, hidden_size, num_layers=num_layers, batch_first=True,
                          bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)

    @property
    def output_size(self) -> int:
        """D*H, the width of ``output`` and of one joined layer of ``h_n``."""
        return self.hidden_size * (2 if self.bidirectional else 1)

    def forward(self, src_ids: Tensor, src_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Encode a padded batch.

        src_ids (B, S) long; src_lengths (B,) long, each in [1, S], on any device.
        Returns ``(output, h_n)`` as nn.GRU lays them out: ``output`` batch-first
        (B, S, D*H) with zeros at padded positions, ``h_n`` (L*D, B, H) in the batch's
        own order, each sentence's state at its own last real token.
        """
        embedded = self.embedding_dropout(self.embedding(src_ids))
        lengths = cpu_lengths(src_lengths)
        order = torch.sort(lengths, descending=True, stable=True).indices
        in_order = bool((order == torch.arange(len(order))).all())
        if not in_order:
            restore = torch.empty_like(order)
            restore[order] = torch.arange(len(order))
            embedded = embedded.index_select(0, to_device_async(order, embedded.device))
        packed = pack_padded_sequence(embedded, lengths[order], batch_first=True, enforce_sorted=True)
        if fused_pays(self.gru, embedded):
            packed_output, h_n = fused_gru(self.gru, packed, self.training)
        else:
            packed_output, h_n = run_gru(self.gru, packed, training=self.training)
        # total_length keeps S columns even when the batch was padded beyond its longest sentence.
        output, _ = pad_packed_sequence(packed_output, batch_first=True, total_length=src_ids.size(1))
        if not in_order:
            restore = to_device_async(restore, embedded.device)
            output, h_n = output.index_select(0, restore), h_n.index_select(1, restore)
        return output, h_n
