"""Seq2Seq: the encoder, the bridge from its ``h_n`` to the decoder's first state, and the decoder.

Search drives the model through ``encode()``, ``init_state()`` and ``decode_step()`` (or ``decode_top()``, its
k best tokens only); training calls ``forward()`` (teacher forcing), which runs the same decoder math.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from ..errors import ConfigError
from .decoder import AttentionType, Decoder, DecoderState, StepOutput
from ..device import to_device_async
from .encoder import Encoder, EncoderOutput, join_directions
from .top_tokens import TopTokens, projection_dtype, search_projection, top_log_probs

logger = logging.getLogger(__name__)


@dataclass
class Introspection:
    """Everything between the source and the logits for one teacher-forced batch.

    ``output`` (B, S, D*H) and ``h_n`` (L*D, B, H) from the encoder; ``joined`` (L, B, D*H),
    h_n with the directions of each layer side by side; ``initial`` (L, B, Hd), the decoder's
    first state after the bridge; ``attention`` (B, T, S) float32, or None without attention;
    ``logits`` (B, T, V); ``src_mask`` (B, S), True = real token.
    """

    output: Tensor
    h_n: Tensor
    joined: Tensor
    initial: Tensor
    attention: Tensor | None
    logits: Tensor
    src_mask: Tensor


class Bridge(nn.Module):
    """joined h_n (L, B, D*H) -> decoder initial state (L, B, Hd): tanh(Linear) per layer, or the identity."""

    def __init__(self, *, kind: str, num_layers: int, in_size: int, out_size: int) -> None:
        super().__init__()
        self.layers = None
        if kind == "linear":
            self.layers = nn.ModuleList(nn.Linear(in_size, out_size) for _ in range(num_layers))

    def forward(self, joined: Tensor) -> Tensor:
        """joined (L, B, D*H) -> (L, B, Hd); layer k of the decoder starts from layer k of the encoder."""
        if self.layers is None:
            return joined
        return torch.stack([torch.tanh(layer(h)) for layer, h in zip(self.layers, joined.unbind(0))])


class Seq2Seq(nn.Module):
    """GRU encoder-decoder. Build it with :meth:`from_config`; the keyword arguments mirror ``ModelConfig``.

    >>> from seq2seq import Seq2Seq, load_config
    >>> model = Seq2Seq.from_config(load_config("tiny").model, src_vocab_size=100, tgt_vocab_size=100)
    >>> enc = model.encode(torch.tensor([[5, 6, 7]]), torch.tensor([3]))  # enc.output (1, 3, D*H), enc.h_n
    """

    def __init__(self, *, src_vocab_size: int, tgt_vocab_size: int, embedding_size: int, hidden_size: int,
                 num_layers: int, bidirectional: bool, decoder_hidden_size: int, bridge: str,
                 attention: AttentionType, input_feeding: bool, context_every_step: bool, dropout: float,
                 tied_embeddings: bool, share_embeddings: bool, pad_id: int = 0, word_dropout: float = 0.0) -> None:
        super().__init__()
        _check_fits(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, hidden_size=hidden_size,
                    bidirectional=bidirectional, decoder_hidden_size=decoder_hidden_size, bridge=bridge,
                    attention=attention, input_feeding=input_feeding, context_every_step=context_every_step,
                    share_embeddings=share_embeddings, pad_id=pad_id)
        self.pad_id = pad_id
        self.tgt_vocab_size = tgt_vocab_size
        self.attention_type = attention
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        src_embedding = nn.Embedding(src_vocab_size, embedding_size, padding_idx=pad_id)
        tgt_embedding = src_embedding if share_embeddings else nn.Embedding(tgt_vocab_size, embedding_size,
                                                                            padding_idx=pad_id)
        if tied_embeddings:
            _scale_for_output(tgt_embedding, pad_id)
        self.encoder = Encoder(embedding=src_embedding, hidden_size=hidden_size, num_layers=num_layers,
                               bidirectional=bidirectional, dropout=dropout, word_dropout=word_dropout)
        self.bridge = Bridge(kind=bridge, num_layers=num_layers, in_size=self.encoder.output_size,
                             out_size=decoder_hidden_size)
        self.decoder = Decoder(embedding=tgt_embedding, hidden_size=decoder_hidden_size, num_layers=num_layers,
                               context_size=self.encoder.output_size, attention=attention,
                               input_feeding=input_feeding, context_every_step=context_every_step,
                               dropout=dropout, tied_embeddings=tied_embeddings, word_dropout=word_dropout)

    @classmethod
    def from_config(cls, model_cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int,
                    pad_id: int = 0) -> Seq2Seq:
        """Build (and validate) the model that ``model_cfg`` describes; logs the parameter count."""
        model = cls(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size,
                    embedding_size=model_cfg.embedding_size, hidden_size=model_cfg.hidden_size,
                    num_layers=model_cfg.num_layers, bidirectional=model_cfg.bidirectional,
                    decoder_hidden_size=model_cfg.decoder_hidden_size, bridge=model_cfg.bridge,
                    attention=model_cfg.attention, input_feeding=model_cfg.input_feeding,
                    context_every_step=model_cfg.context_every_step, dropout=model_cfg.dropout,
                    tied_embeddings=model_cfg.tied_embeddings, share_embeddings=model_cfg.share_embeddings,
                    pad_id=pad_id, word_dropout=model_cfg.word_dropout)
        logger.info("model: %s parameters (attention %s, %d layers, decoder %d)", f"{model.num_parameters():,}",
                    model_cfg.attention, model_cfg.num_layers, model_cfg.decoder_hidden_size)
        return model

    def num_parameters(self) -> int:
        """Trainable parameters, shared (tied) matrices counted once."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def encode(self, src_ids: Tensor, src_lengths: Tensor) -> EncoderOutput:
        """Encode a padded batch: src_ids (B, S) long, src_lengths (B,) long on any device.

        Returns an :class:`EncoderOutput` with ``output`` (B, S, D*H), ``h_n`` (L*D, B, H),
        ``src_mask`` (B, S) and the attention keys, computed here once for the whole search.
        An empty source is read as a single pad token, so that attention always has a position.
        """
        if src_ids.dim() != 2 or src_lengths.shape != (src_ids.size(0),):
            raise ValueError(f"encode needs src_ids (B, S) and src_lengths (B,), got {tuple(src_ids.shape)} "
                             f"and {tuple(src_lengths.shape)}")
        if src_ids.size(1) == 0:
            src_ids = src_ids.new_full((src_ids.size(0), 1), self.pad_id)
        src_lengths = src_lengths.clamp(min=1)
        self.decoder.forget_arranged_weights()  # a new search: the weights may have changed since the last
        output, h_n = self.encoder(src_ids, src_lengths)
        device_lengths = to_device_async(src_lengths, src_ids.device)  # pinned: the host does not wait
        src_mask = torch.arange(src_ids.size(1), device=src_ids.device)[None, :] < device_lengths[:, None]
        attention = self.decoder.attention
        keys = None if attention is None else attention.precompute_keys(output)
        return EncoderOutput(output=output, h_n=h_n, src_mask=src_mask, keys=keys)

    def join_h_n(self, h_n: Tensor) -> Tensor:
        """h_n (L*D, B, H) -> (L, B, D*H): the two directions of each layer side by side."""
        return join_directions(h_n, self.num_layers, self.bidirectional)

    def init_state(self, enc: EncoderOutput) -> DecoderState:
        """The decoder's first state: h_n joined per layer, then bridged to (L, B, Hd)."""
        joined = self.join_h_n(enc.h_n)
        return self.decoder.initial_state(self.bridge(joined), joined)

    def decode_step(self, prev_ids: Tensor, state: DecoderState, enc: EncoderOutput) -> StepOutput:
        """One token for B hypotheses: prev_ids (B,) long -> StepOutput(log_probs (B, V) float32, state,
        attention (B, S) or None)."""
        return self.decoder.step(prev_ids, state, enc)

    def decode_top(self, prev_ids: Tensor, state: DecoderState, enc: EncoderOutput, k: int,
                   banned: tuple[int, ...]) -> TopTokens:
        """:meth:`decode_step` reduced to the k most probable tokens of each row, the ``banned`` ids left out of
        the choice (see :mod:`.top_tokens`): TopTokens(log_probs (B, k), ids (B, k), state, attention)."""
        features, state, attention = self.decoder.step_features(prev_ids, state, enc)
        log_probs, ids = top_log_probs(features, self.output_layer, k, banned, projection=self._projection(features))
        return TopTokens(log_probs, ids, state, attention)

    def _projection(self, features: Tensor) -> Tensor | None:
        """The output layer arranged for search on the CPU (:func:`.top_tokens.search_projection`), kept with the
        decoder's other arranged weights (``Decoder.arranged``: until the next search begins)."""
        if features.device.type != "cpu":
            return None
        output = self.output_layer
        dtype = projection_dtype(output, features.device)
        params = [output.weight] if output.bias is None else [output.weight, output.bias]
        return self.decoder.arranged("projection", dtype, params, lambda: search_projection(output, dtype))

    def forward(self, src_ids: Tensor, src_lengths: Tensor, tgt_in_ids: Tensor, rows: Tensor | None = None) -> Tensor:
        """Teacher forcing: src_ids (B, S), src_lengths (B,), tgt_in_ids (B, T) (BOS + target) -> logits (B, T, V),
        or (N, V) for only the flat positions ``rows`` (N,) of (B * T) when given (training passes the real ones)."""
        return self.output_layer(self.output_features(src_ids, src_lengths, tgt_in_ids, rows=rows))

    def output_features(self, src_ids: Tensor, src_lengths: Tensor, tgt_in_ids: Tensor,
                        rows: Tensor | None = None) -> Tensor:
        """:meth:`forward` up to the output layer: (B, T, E), or (N, E) for ``rows``; ``output_layer`` maps it to logits."""
        enc = self.encode(src_ids, src_lengths)
        return self.decoder(tgt_in_ids, self.init_state(enc), enc, rows=rows).features

    @property
    def output_layer(self) -> nn.Linear:
        """The vocabulary projection, Linear(E, V) (its weight is the target embedding when tied)."""
        return self.decoder.output

    @torch.no_grad()
    def introspect(self, src_ids: Tensor, src_lengths: Tensor, tgt_in_ids: Tensor) -> Introspection:
        """Run teacher forcing on a batch and return every intermediate an inspection shows.

        Shapes as in :meth:`forward`; see :class:`Introspection`. Runs without gradients
        in the current mode (call ``eval()`` first for dropout-free values).
        """
        enc = self.encode(src_ids, src_lengths)
        joined = self.join_h_n(enc.h_n)
        state = self.decoder.initial_state(self.bridge(joined), joined)
        run = self.decoder(tgt_in_ids, state, enc)
        return Introspection(output=enc.output, h_n=enc.h_n, joined=joined, initial=state.hidden,
                             attention=run.attention, logits=run.logits, src_mask=enc.src_mask)


def _check_fits(*, src_vocab_size: int, tgt_vocab_size: int, hidden_size: int, bidirectional: bool,
                decoder_hidden_size: int, bridge: str, attention: str, input_feeding: bool,
                context_every_step: bool, share_embeddings: bool, pad_id: int) -> None:
    """Reject settings that cannot work together, naming the config keys, before any layer is built."""
    enc_size = hidden_size * (2 if bidirectional else 1)
    enc_desc = (f"2 x model.hidden_size = {enc_size} (bidirectional encoder)" if bidirectional
                else f"model.hidden_size = {enc_size} (unidirectional encoder)")
    if bridge == "none" and decoder_hidden_size != enc_size:
        raise ConfigError(f"model.bridge=none starts the decoder from h_n as it is, so model.decoder_hidden_size "
                          f"must equal {enc_desc}; got model.decoder_hidden_size={decoder_hidden_size}. "
                          f"Set model.decoder_hidden_size={enc_size} or model.bridge=linear")
    if attention == "luong_dot" and decoder_hidden_size != enc_size:
        raise ConfigError(f"model.attention=luong_dot scores h_t . h_s, so model.decoder_hidden_size must equal "
                          f"{enc_desc}; got model.decoder_hidden_size={decoder_hidden_size}. Set "
                          f"model.decoder_hidden_size={enc_size} or model.attention=luong_general")
    if input_feeding and attention not in ("luong_dot", "luong_general"):
        raise ConfigError(f"model.input_feeding=true is for Luong attention only (model.attention={attention}); "
                          f"set model.input_feeding=false or model.attention=luong_general / luong_dot")
    if context_every_step and attention != "none":
        raise ConfigError(f"model.context_every_step=true is for model.attention=none only (got "
                          f"model.attention={attention}); set model.context_every_step=false")
    if share_embeddings and src_vocab_size != tgt_vocab_size:
        raise ConfigError(f"model.share_embeddings=true needs one vocabulary for both sides, but the source has "
                          f"{src_vocab_size} tokens and the target {tgt_vocab_size}; set tokenizer.joint=true "
                          f"or model.share_embeddings=false")
    for name, size in (("source", src_vocab_size), ("target", tgt_vocab_size)):
        if not 0 <= pad_id < size:
            raise ConfigError(f"the {name} vocabulary has {size} tokens, too few for pad id {pad_id}; "
                              f"check tokenizer.vocab_size")


def _scale_for_output(embedding: nn.Embedding, pad_id: int) -> None:
    """Initialise a tied embedding from N(0, 1/E) instead of nn.Embedding's N(0, 1).

    As the output projection it multiplies the E-wide readout (tanh, in [-1, 1]): with unit
    variance the first logits have a standard deviation near sqrt(E), the initial softmax
    is almost one-hot at random tokens, and the loss starts far above log V.
    """
    with torch.no_grad():
        nn.init.normal_(embedding.weight, std=embedding.embedding_dim ** -0.5)
        embedding.weight[pad_id].zero_()
