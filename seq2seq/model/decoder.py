"""The GRU decoder: ``step()`` advances one token for search; ``forward()`` runs teacher forcing.

Both run the same helpers, so training and search cannot drift apart:

- *Parallel* decoders, whose GRU input does not depend on attention (``none``, ``none`` with
  ``context_every_step``, Luong without input feeding), run the whole target through one
  nn.GRU call (cuDNN on CUDA) and attend for all steps at once; ``step()`` is the same
  call with T = 1.
- *Step-wise* decoders (Bahdanau, Luong with input feeding) need attention from step
  t - 1 in the GRU input at step t, so ``forward()`` loops over time for the recurrent
  part only; ``step()`` is one iteration of that loop.

After the recurrence every decoder applies the same readout (the pre-output vector of
Bahdanau et al. / Luong's attentional vector), ``r_t = tanh(W [s_t; c_t; e_{t-1}])`` of
size E, then dropout and ``Linear(E, V)``. Being E wide lets the output projection share
its weight with the target embedding. In the loop ``forward()`` only collects per-step
vectors: the readout and the vocabulary projection run once over (B, T, *) afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ids import PAD_ID
from .arranged import ArrangedWeights
from .attention import attend_grouped, build_attention, softmax_bias
from .dropout import Dropout, EmbeddingDropout
from .encoder import EncoderOutput, run_gru
from .fused import LoopWeights, gather_weights, layer_dropout, loop_parameters, run_loop, stepwise_recurrence
from .fused_feeding import FeedingWeights, gather_feeding_weights, run_feeding
from .gru_cell import product_dtype

AttentionType = Literal["none", "bahdanau", "luong_dot", "luong_general"]


@dataclass
class DecoderState:
    """The decoder's recurrent state for B hypotheses.

    ``hidden`` (L, B, Hd); ``feed`` (B, E), the previous readout, for Luong input feeding
    (else None); ``context`` (B, C), the fixed context fed to every step with
    ``context_every_step`` (else None).
    """

    hidden: Tensor
    feed: Tensor | None = None
    context: Tensor | None = None

    def index_select(self, idx: Tensor) -> DecoderState:
        """Select, reorder or repeat hypotheses by index idx (B',) long, e.g. by beam origin."""
        return DecoderState(
            hidden=self.hidden.index_select(1, idx),  # (L, B, Hd): the batch dim is 1
            feed=None if self.feed is None else self.feed.index_select(0, idx),
            context=None if self.context is None else self.context.index_select(0, idx),
        )


@dataclass
class StepOutput:
    """One decoding step: ``log_probs`` (B, V) float32, the next ``state``, ``attention`` (B, S) or None."""

    log_probs: Tensor
    state: DecoderState
    attention: Tensor | None

    def __iter__(self) -> Iterator:
        # Also unpacks as (log_probs, state, attention).
        return iter((self.log_probs, self.state, self.attention))


@dataclass
class DecoderRun:
    """Teacher forcing over T steps: ``features`` (B, T, E), the dropped-out readout; ``attention`` (B, T, S) or
    None; final ``state``; ``logits`` (B, T, V). Training skips ``logits`` (``training.loss.output_loss_sums``)."""

    features: Tensor
    attention: Tensor | None
    state: DecoderState
    output: nn.Linear

    @property
    def logits(self) -> Tensor:
        return self.output(self.features)


@dataclass
class _Recurrence:
    """What the recurrent part yields for T steps: top layer (B, T, Hd), context (B, T, C) or None,
    attention weights (B, T, S) or None, and the readout when it is part of the recurrence (input feeding)."""

    top: Tensor
    context: Tensor | None
    attention: Tensor | None
    readout: Tensor | None
    state: DecoderState


class Decoder(ArrangedWeights, nn.Module):
    """A ``num_layers``-deep GRU of ``hidden_size`` units; attention reads ``context_size``-wide encoder states."""

    def __init__(self, *, embedding: nn.Embedding, hidden_size: int, num_layers: int, context_size: int,
                 attention: AttentionType, input_feeding: bool, context_every_step: bool,
                 dropout: float, tied_embeddings: bool, word_dropout: float = 0.0) -> None:
        super().__init__()
        vocab_size, embedding_size = embedding.num_embeddings, embedding.embedding_dim
        self.embedding = embedding
        self.dropout, self.embedding_dropout = Dropout(dropout), EmbeddingDropout(dropout, word_dropout)
        self.attention_type = attention
        self.input_feeding = input_feeding
        self.context_every_step = context_every_step
        self.stepwise = attention == "bahdanau" or input_feeding
        self.attention = build_attention(attention, query_size=hidden_size, key_size=context_size)
        uses_context = attention != "none" or context_every_step
        context_in_gru = attention == "bahdanau" or context_every_step
        gru_input = embedding_size + (context_size if context_in_gru else 0) + (embedding_size if input_feeding else 0)
        self.gru = nn.GRU(gru_input, hidden_size, num_layers=num_layers, batch_first=True,
                          dropout=dropout if num_layers > 1 else 0.0)
        self.readout = nn.Linear(hidden_size + (context_size if uses_context else 0) + embedding_size, embedding_size)
        self.output = nn.Linear(embedding_size, vocab_size)
        if tied_embeddings:
            self.output.weight = self.embedding.weight

    def initial_state(self, hidden: Tensor, joined: Tensor) -> DecoderState:
        """The state before the first token: hidden (L, B, Hd) from the bridge; joined (L, B, C) the joined h_n."""
        feed = None
        if self.input_feeding:
            feed = hidden.new_zeros(hidden.size(1), self.readout.out_features)
        return DecoderState(hidden=hidden, feed=feed, context=joined[-1] if self.context_every_step else None)

    def forward(self, tgt_in_ids: Tensor, state: DecoderState, enc: EncoderOutput,
                rows: Tensor | None = None) -> DecoderRun:
        """Teacher forcing: tgt_in_ids (B, T) long (BOS + target) -> features/logits (B, T, *), attention (B, T, S).
        With ``rows`` (N,), flat indices into (B * T), the readout and output layer run for those positions only
        and ``features``/``logits`` are (N, *)."""
        embedded = self.embedding_dropout(self.embedding(tgt_in_ids))
        if self.stepwise:
            rec = self._loop(embedded, state, enc, _host_lengths(tgt_in_ids))
        else:
            rec = self._parallel(embedded, state, enc)
        if rec.readout is not None:
            readout = _positions(rec.readout, rows)
        else:
            context = None if rec.context is None else _positions(rec.context, rows)
            readout = self._readout(_positions(rec.top, rows), context, _positions(embedded, rows))
        return DecoderRun(features=self.dropout(readout), attention=rec.attention, state=rec.state, output=self.output)

    def step(self, prev_ids: Tensor, state: DecoderState, enc: EncoderOutput) -> StepOutput:
        """One token for B hypotheses: prev_ids (B,) long -> log_probs (B, V) float32, state, attention (B, S)."""
        features, state, attention = self.step_features(prev_ids, state, enc)
        return StepOutput(torch.log_softmax(self.output(features).float(), dim=-1), state, attention)

    def step_features(self, prev_ids: Tensor, state: DecoderState, enc: EncoderOutput
                      ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """:meth:`step` up to the output layer: (features (B, E), state, attention (B, S) or None)."""
        embedded = self.embedding_dropout(self.embedding(prev_ids))[:, None, :]  # (B, 1, E)
        if self.stepwise:
            rec = self._recurrent_step(embedded[:, 0], state, enc)
        else:
            rec = self._parallel(embedded, state, enc)
        readout = rec.readout if rec.readout is not None else self._readout(rec.top, rec.context, embedded)
        return self.dropout(readout[:, 0]), rec.state, None if rec.attention is None else rec.attention[:, 0]

    def _readout(self, top: Tensor, context: Tensor | None, embedded: Tensor) -> Tensor:
        """r_t = tanh(W [s_t; c_t; e_{t-1}]) (B, T, E).

        top (B, T, Hd), context (B, T, C) or None, embedded (B, T, E): the dropped-out e_{t-1}.
        """
        parts = [top] if context is None else [top, context]
        return torch.tanh(self.readout(torch.cat([*parts, embedded], dim=-1)))

    def _parallel(self, embedded: Tensor, state: DecoderState, enc: EncoderOutput) -> _Recurrence:
        """All T steps in one GRU call, then attention for all steps at once: embedded (B, T, E)."""
        gru_input = embedded
        if state.context is not None:
            # Cho et al. 2014: the fixed context enters every step (and the readout below).
            gru_input = torch.cat([embedded, state.context[:, None, :].expand(-1, embedded.size(1), -1)], dim=-1)
        top, hidden = run_gru(self.gru, gru_input, state.hidden, self.training)
        context, attention = state.context, None
        if self.attention is not None:
            context, attention = attend_grouped(self.attention, top, enc.keys, enc.output, enc.src_mask)
        elif context is not None:
            context = context[:, None, :].expand(-1, top.size(1), -1)
        return _Recurrence(top=top, context=context, attention=attention, readout=None,
                           state=DecoderState(hidden=hidden, context=state.context))

    def _loop(self, embedded: Tensor, state: DecoderState, enc: EncoderOutput,
              lengths: Tensor | None = None) -> _Recurrence:
        """Step-wise teacher forcing: the recurrent part per time step, its outputs stacked to (B, T, *).
        ``lengths`` (B,) on the CPU, the real steps of each row: the fused Bahdanau loop skips the rest."""
        if not self._gru_watched():
            if self.attention_type == "bahdanau":
                return self._bahdanau(embedded, state, enc, lengths)
            if self.input_feeding:
                return self._feeding(embedded, state, enc)
        steps = []
        for embedded_t in embedded.unbind(1):
            step = self._recurrent_step(embedded_t, state, enc)
            state = step.state
            steps.append(step)

        def stacked(name: str) -> Tensor | None:
            parts = [getattr(s, name) for s in steps]
            return None if parts[0] is None else torch.cat(parts, dim=1)

        return _Recurrence(top=stacked("top"), context=stacked("context"), attention=stacked("attention"),
                           readout=stacked("readout"), state=state)

    def _recurrent_step(self, embedded_t: Tensor, state: DecoderState, enc: EncoderOutput) -> _Recurrence:
        """One step of a step-wise decoder: embedded_t (B, E) -> a _Recurrence with T = 1."""
        if not self._gru_watched():
            fused = self._bahdanau if self.attention_type == "bahdanau" else self._feeding
            return fused(embedded_t[:, None, :], state, enc)
        if self.attention_type == "bahdanau":  # one nn.GRU call per step, for the hooks that watch them
            query = state.hidden[-1][:, None, :]
            context, attention = attend_grouped(self.attention, query, enc.keys, enc.output, enc.src_mask)
            top, hidden = run_gru(self.gru, torch.cat([embedded_t[:, None, :], context], dim=-1), state.hidden,
                                  self.training)
            return _Recurrence(top=top, context=context, attention=attention, readout=None,
                               state=DecoderState(hidden=hidden))
        # Luong et al. 2015 input feeding: the previous readout joins the input; attend from the new output.
        top, hidden = run_gru(self.gru, torch.cat([embedded_t, state.feed], dim=-1)[:, None, :], state.hidden,
                              self.training)
        context, attention = attend_grouped(self.attention, top, enc.keys, enc.output, enc.src_mask)
        readout = self._readout(top, context, embedded_t[:, None, :])
        return _Recurrence(top=top, context=context, attention=attention, readout=readout,
                           state=DecoderState(hidden=hidden, feed=readout[:, 0]))

    def _gru_watched(self) -> bool:
        """Whether hooks watch nn.GRU's calls (inspection.gates.record_calls): then make them, one per step."""
        return bool(self.gru._forward_hooks or self.gru._forward_pre_hooks)

    def _feeding(self, embedded: Tensor, state: DecoderState, enc: EncoderOutput) -> _Recurrence:
        """Luong et al. 2015 with input feeding over T steps (T = 1 when stepping), run by :mod:`.fused_feeding`:
        embedded (B, T, E) -> readout (B, T, E), which is also the next feed, top, context and weights (B, T, *)."""
        if torch.is_grad_enabled():
            enc = enc.for_rows(embedded.size(0))  # the autograd loop wants one encoder row per hypothesis
        run = run_feeding(self.gru, self.readout, embedded, state.hidden, state.feed, enc.keys, enc.output,
                          enc.src_mask, self.training, lambda dtype: self._feeding_weights(dtype, embedded.size(-1)))
        return _Recurrence(top=run.top, context=run.context, attention=run.weights, readout=run.readout,
                           state=DecoderState(hidden=run.hidden, feed=run.readout[:, -1]))

    def _feeding_weights(self, dtype: torch.dtype, embedding_size: int) -> FeedingWeights:
        """The input-feeding loop's weights for search, arranged once per search as :meth:`_inference_weights`."""
        params = (*self.gru._flat_weights, self.readout.weight, self.readout.bias)
        arrange = lambda: gather_feeding_weights(self.gru, self.readout, embedding_size, dtype)  # noqa: E731
        return self.arranged("feeding", dtype, params, arrange)

    def _bahdanau(self, embedded: Tensor, state: DecoderState, enc: EncoderOutput,
                  lengths: Tensor | None = None) -> _Recurrence:
        """Bahdanau et al. 2015 over T steps (T = 1 when stepping): attend from the previous top-layer state,
        feed [e_{t-1}; c_t] to the GRU. embedded (B, T, E) -> top (B, T, Hd), context (B, T, C), weights (B, T, S).

        The fused loop of :mod:`.fused` runs it; the embedding half of layer 0's input product is one
        product over all T steps here, before the loop.
        """
        gru, size = self.gru, embedded.size(-1)
        gi_embedded = F.linear(embedded.transpose(0, 1), gru.weight_ih_l0[:, :size], gru.bias_ih_l0)  # (T, B, 3H)
        query_proj, energy = self.attention.query_proj, self.attention.energy
        params = loop_parameters(gru, query_proj, energy, size)
        differentiable = torch.is_grad_enabled() and (gi_embedded.requires_grad or any(p.requires_grad for p in params))
        if differentiable:
            enc = enc.for_rows(embedded.size(0))  # the autograd loop wants one encoder row per hypothesis
        mask_bias = softmax_bias(enc.src_mask)
        drop = layer_dropout(gru, embedded.size(1), embedded.size(0), embedded.device, self.training)
        if differentiable:
            top, context, weights, hidden = stepwise_recurrence(gi_embedded, state.hidden, enc.keys, enc.output,
                                                                mask_bias, drop, lengths, size, gru, query_proj, energy,
                                                                params)
        else:
            weights_now = self._inference_weights(product_dtype(embedded.device), size)
            with torch.autocast(embedded.device.type, enabled=False):
                dtype = weights_now.top.dtype
                top, context, weights, hidden = run_loop(gi_embedded.float(), state.hidden, enc.keys.to(dtype),
                                                         enc.output.to(dtype), mask_bias, drop, weights_now)
        return _Recurrence(top=top.transpose(0, 1), context=context.transpose(0, 1),
                           attention=weights.transpose(0, 1), readout=None, state=DecoderState(hidden=hidden))

    def _inference_weights(self, dtype: torch.dtype, embedding_size: int) -> LoopWeights:
        """The loop's weights for search, arranged (and cast) once per search, not per step. ``Seq2Seq.encode``
        drops them (parameter versions cannot tell: fused optimizers update weights in place without bumping them)."""
        query_proj, energy = self.attention.query_proj, self.attention.energy
        return self.arranged("loop", dtype, loop_parameters(self.gru, query_proj, energy, embedding_size),
                             lambda: gather_weights(self.gru, query_proj, energy, embedding_size, dtype))


def _host_lengths(tgt_in_ids: Tensor) -> Tensor | None:
    """The real positions of each row of tgt_in_ids (B, T) (BOS and the target), when they cost no device sync."""
    return (tgt_in_ids != PAD_ID).sum(1) if tgt_in_ids.device.type == "cpu" else None


def _positions(x: Tensor, rows: Tensor | None) -> Tensor:
    """x (B, T, D) -> x itself, or the rows (N,) of its (B * T, D) view."""
    return x if rows is None else x.reshape(-1, x.size(-1)).index_select(0, rows)
