"""The floor of scripts/benchmark.py: the reference shape written directly in plain PyTorch, no package code."""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seq2seq.config import ModelConfig
from seq2seq.data import Batch
from seq2seq.device import AmpSettings
from seq2seq.errors import ConfigError

class FloorSeq2Seq(nn.Module):
    """Bidirectional packed GRU encoder, tanh(Linear) bridge per layer, additive-attention GRU decoder.

    The shape (and so the parameter count) of the package's reference model: the decoder
    attends from the previous top-layer state, feeds [e_{t-1}; c_t] to its GRU, and reads out
    tanh(W [s_t; c_t; e_{t-1}]) of embedding size before the vocabulary projection, tied to the
    target embedding (and that to the source one) when the config says so.
    """

    def __init__(self, *, src_vocab_size: int, tgt_vocab_size: int, embedding_size: int, hidden_size: int,
                 num_layers: int, decoder_hidden_size: int, dropout: float, tied_embeddings: bool,
                 share_embeddings: bool) -> None:
        super().__init__()
        context_size = 2 * hidden_size
        between_layers = dropout if num_layers > 1 else 0.0  # nn.GRU's dropout acts between layers only
        self.num_layers, self.hidden_size = num_layers, hidden_size
        self.src_embedding = nn.Embedding(src_vocab_size, embedding_size, padding_idx=0)
        self.encoder = nn.GRU(embedding_size, hidden_size, num_layers, batch_first=True, bidirectional=True,
                              dropout=between_layers)
        self.bridge = nn.ModuleList(nn.Linear(context_size, decoder_hidden_size) for _ in range(num_layers))
        self.tgt_embedding = (self.src_embedding if share_embeddings
                              else nn.Embedding(tgt_vocab_size, embedding_size, padding_idx=0))
        self.key_proj = nn.Linear(context_size, decoder_hidden_size, bias=False)
        self.query_proj = nn.Linear(decoder_hidden_size, decoder_hidden_size)
        self.energy = nn.Linear(decoder_hidden_size, 1, bias=False)
        self.decoder = nn.GRU(embedding_size + context_size, decoder_hidden_size, num_layers, batch_first=True,
                              dropout=between_layers)
        self.readout = nn.Linear(decoder_hidden_size + context_size + embedding_size, embedding_size)
        self.output = nn.Linear(embedding_size, tgt_vocab_size)
        if tied_embeddings:
            self.output.weight = self.tgt_embedding.weight  # the readout is E wide so that it can share
        self.dropout = nn.Dropout(dropout)

    def forward(self, src_ids: Tensor, src_lengths: Tensor, tgt_in_ids: Tensor) -> Tensor:
        """src_ids (B, S), src_lengths (B,) on the CPU, tgt_in_ids (B, T) -> logits (B, T, V)."""
        batch_size, src_len = src_ids.shape
        packed = pack_padded_sequence(self.dropout(self.src_embedding(src_ids)), src_lengths, batch_first=True,
                                      enforce_sorted=False)
        packed_out, h_n = self.encoder(packed)
        enc_out, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=src_len)  # (B, S, 2H)
        h_n = h_n.view(self.num_layers, 2, batch_size, self.hidden_size)
        joined = torch.cat([h_n[:, 0], h_n[:, 1]], dim=-1)  # (L, B, 2H)
        hidden = torch.stack([torch.tanh(layer(h)) for layer, h in zip(self.bridge, joined)])  # (L, B, Hd)
        pad_mask = (torch.arange(src_len, device=src_ids.device)[None, :]
                    >= src_lengths.to(src_ids.device)[:, None])  # (B, S), True = padding
        keys = self.key_proj(enc_out)  # (B, S, A), once per batch
        tgt_embedded = self.dropout(self.tgt_embedding(tgt_in_ids))  # (B, T, E)
        tops, contexts = [], []
        for embedded_t in tgt_embedded.split(1, dim=1):  # (B, 1, E)
            scores = self.energy(torch.tanh(keys + self.query_proj(hidden[-1])[:, None, :])).squeeze(-1)
            weights = torch.softmax(scores.float().masked_fill(pad_mask, float("-inf")), dim=-1)
            context = torch.bmm(weights[:, None, :].to(enc_out.dtype), enc_out)  # (B, 1, 2H)
            top, hidden = self.decoder(torch.cat([embedded_t, context], dim=-1), hidden)
            tops.append(top)
            contexts.append(context)
        # Readout and vocabulary projection once over all T steps, outside the loop.
        readout = torch.tanh(self.readout(torch.cat([torch.cat(tops, 1), torch.cat(contexts, 1), tgt_embedded],
                                                    dim=-1)))
        return self.output(self.dropout(readout))


def floor_trainer(model_cfg: ModelConfig, train_cfg: Any, src_vocab_size: int, tgt_vocab_size: int,
                  device: torch.device, amp: AmpSettings) -> tuple[nn.Module, Callable[[Batch], Tensor]]:
    """The floor model and one training update on a batch: autocast forward, label-smoothed cross-entropy
    per real target token, backward, gradient clipping, Adam (fused, like the package)."""
    shape = (model_cfg.attention, model_cfg.bidirectional, model_cfg.bridge)
    if shape != ("bahdanau", True, "linear"):
        raise ConfigError(f"the floor is written for model.attention=bahdanau, model.bidirectional=true and "
                          f"model.bridge=linear; --config has {shape}: pass a config of that shape")
    torch.manual_seed(train_cfg.seed)
    model = FloorSeq2Seq(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size,
                         embedding_size=model_cfg.embedding_size, hidden_size=model_cfg.hidden_size,
                         num_layers=model_cfg.num_layers, decoder_hidden_size=model_cfg.decoder_hidden_size,
                         dropout=model_cfg.dropout, tied_embeddings=model_cfg.tied_embeddings,
                         share_embeddings=model_cfg.share_embeddings).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=train_cfg.lr, betas=tuple(train_cfg.betas), fused=True)

    def step(batch: Batch) -> Tensor:
        with torch.autocast(device.type, dtype=amp.dtype, enabled=amp.enabled):
            logits = model(batch.src_ids, batch.src_lengths, batch.tgt_in_ids)
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch.tgt_out_ids.flatten(), ignore_index=0,
                               label_smoothing=train_cfg.label_smoothing, reduction="sum")
        (loss / batch.num_tgt_tokens).backward()
        nn.utils.clip_grad_norm_(model.parameters(), train_cfg.clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return model, step


