"""The encoder: embedding + multi-layer (bi)GRU over packed sequences, returning ``(output, h_n)`` as nn.GRU does.

Packing (``enforce_sorted=False``) is what makes padding harmless: ``h_n`` is each
sentence's state at its own last real token, the backward direction starts at that
token, and the padded positions of ``output`` are zeros. Without it the GRU reads the
pad tokens and both ``h_n`` and the backward states depend on the batch a sentence is in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


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


def cpu_lengths(lengths: Tensor) -> Tensor:
    """lengths (B,) as int64 on the CPU, as pack_padded_sequence needs; no device sync if already there."""
    if lengths.device.type == "cpu":
        return lengths.long()
    return lengths.to("cpu", torch.long)


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
    """Embedding, dropout, then an ``num_layers``-deep (bi)GRU with ``hidden_size`` units per direction."""

    def __init__(self, *, embedding: nn.Embedding, hidden_size: int, num_layers: int,
                 bidirectional: bool, dropout: float) -> None:
        super().__init__()
        self.embedding = embedding
        self.dropout = nn.Dropout(dropout)
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
        embedded = self.dropout(self.embedding(src_ids))
        packed = pack_padded_sequence(embedded, cpu_lengths(src_lengths), batch_first=True, enforce_sorted=False)
        packed_output, h_n = self.gru(packed)
        # total_length keeps S columns even when the batch was padded beyond its longest sentence.
        output, _ = pad_packed_sequence(packed_output, batch_first=True, total_length=src_ids.size(1))
        return output, h_n
