"""Beam search over B sentences x K beams as rows of one tensor, with an exact stopping rule."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..config import DecodeConfig
from ..device import to_device_async
from ..ids import BOS_ID, EOS_ID, PAD_ID
from .common import NEG_INF, Hypothesis, StepModel, length_penalty, max_output_lengths, top_next_tokens


def beam_search(model: StepModel, src_ids: Tensor, src_lengths: Tensor, options: DecodeConfig | None = None,
                return_attention: bool = False) -> list[list[Hypothesis]]:
    """Beam search over B sentences x K beams at once -> per sentence, up to ``options.nbest`` Hypotheses, best first.

    src_ids (B, S), src_lengths (B,). Each step scores the K x V extensions of a sentence's
    open beams and keeps the top K. An EOS among them moves that hypothesis to the
    sentence's finished list and leaves its slot empty for the step, so beam size 1 is
    exactly greedy search. The finished list is final once no open beam can beat its
    ``nbest``-th entry (see :func:`_open_bound`); the sentence then leaves the batch.
    """
    options = options or DecodeConfig()
    beam_size, nbest = options.beam_size, options.nbest
    limits = max_output_lengths(src_lengths, options)
    max_steps = int(limits.max()) + 1
    device = src_ids.device
    batch_size = src_ids.size(0)
    # The K beams of a sentence are K consecutive rows of the state; they share one row of the encoder
    # output (StepModel), so it is neither copied K times nor reordered when sentences finish.
    enc = model.encode(src_ids, src_lengths)
    hypothesis_rows = torch.arange(batch_size, device=device).repeat_interleave(beam_size)
    # Only the first beam of each sentence is alive at the start; the others are copies with score -inf.
    log_prob = torch.full((batch_size, beam_size), NEG_INF, device=device)
    log_prob[:, 0] = 0.0
    beams = _Beams(sentence=torch.arange(batch_size), limits=limits,
                   limit_rows=limits.to(device).repeat_interleave(beam_size),
                   bound_penalty=length_penalty(limits.to(device, torch.float32) + 1.0, options.length_penalty),
                   enc=enc, state=model.init_state(enc).index_select(hypothesis_rows), log_prob=log_prob,
                   history=torch.empty(batch_size * beam_size, 0, dtype=torch.long, device=device), attention=None,
                   store=_empty_store(batch_size, nbest, max_steps, device))
    prev_ids = torch.full((batch_size * beam_size,), BOS_ID, dtype=torch.long, device=device)
    finished_parts: list[_Beams] = []
    for step in range(max_steps):
        top = top_next_tokens(model, prev_ids, beams.state, beams.enc, beam_size, step=step,
                              limits=beams.limit_rows, shortest_limit=int(beams.limits.min()), options=options,
                              history=beams.history)
        candidates = _top_candidates(beams.log_prob, top.log_probs, top.ids, beam_size)
        beams = beams.advance(top.state, candidates, top.attention if return_attention else None, step,
                              options.length_penalty)
        done = (beams.store.score[:, nbest - 1] >= _open_bound(beams.log_prob, beams.bound_penalty)).cpu()
        if bool(done.any()):  # `done` above is the one host synchronisation per step
            finished_parts.append(beams.select(done.nonzero()[:, 0], beam_size, keep_model_state=False))
            if bool(done.all()):
                break
            beams = beams.select((~done).nonzero()[:, 0], beam_size)
        prev_ids = beams.history[:, -1]
    return _beam_hypotheses(finished_parts, src_lengths)


@dataclass
class _FinishedStore:
    """The best ``capacity`` finished hypotheses of each sentence, sorted best first (beam search only).

    score/log_prob/length (B, F); tgt_ids (B, F, T) padded with PAD; attention (B, F, T, S) or None.
    Empty entries have score -inf.
    """

    score: Tensor
    log_prob: Tensor
    length: Tensor
    tgt_ids: Tensor
    attention: Tensor | None

    def select(self, sentences: Tensor) -> _FinishedStore:
        """The lists of the sentences ``sentences`` (A',) long, on the store's device."""
        return _FinishedStore(score=self.score[sentences], log_prob=self.log_prob[sentences],
                              length=self.length[sentences], tgt_ids=self.tgt_ids[sentences],
                              attention=None if self.attention is None else self.attention[sentences])


@dataclass
class _Candidates:
    """The top K extensions of each sentence: log_prob, origin (the beam extended) and tgt_ids, each (A, K)."""

    log_prob: Tensor
    origin: Tensor
    tgt_ids: Tensor


@dataclass
class _Beams:
    """The K beams of each sentence still searching, and its finished list (A sentences).

    sentence/limits (A,) on the CPU: the input row and output limit of each; limit_rows
    (A*K,) and bound_penalty (A,) = lp(limit + 1) on the device; enc one row per sentence (A), state one
    per beam (A*K); log_prob (A, K), -inf for
    an empty slot; history (A*K, t); attention (A*K, t, S) or None; store the finished list.
    """

    sentence: Tensor
    limits: Tensor
    limit_rows: Tensor
    bound_penalty: Tensor
    enc: Any
    state: Any
    log_prob: Tensor
    history: Tensor
    attention: Tensor | None
    store: _FinishedStore

    def advance(self, state: Any, candidates: _Candidates, attention: Tensor | None, step: int,
                alpha: float) -> _Beams:
        """Reorder everything by beam origin, append the new tokens, move EOS hypotheses to the store."""
        num_sentences, beam_size = candidates.origin.shape
        row_offset = torch.arange(num_sentences, device=candidates.origin.device).unsqueeze(1) * beam_size
        flat_origin = (candidates.origin + row_offset).view(-1)
        history = torch.cat([self.history.index_select(0, flat_origin), candidates.tgt_ids.view(-1, 1)], dim=1)
        attention_history = self.attention
        if attention is not None:
            attention_history = _extend_attention(self.attention, attention.float(), flat_origin)
        is_eos = candidates.tgt_ids == EOS_ID
        store = _add_finished(self.store, candidates.log_prob, is_eos, history, attention_history, step, alpha)
        return dataclasses.replace(self, state=state.index_select(flat_origin), history=history,
                                   attention=attention_history, store=store,
                                   log_prob=candidates.log_prob.masked_fill(is_eos, NEG_INF))

    def select(self, keep: Tensor, beam_size: int, keep_model_state: bool = True) -> _Beams:
        """The sentences ``keep`` (A',) CPU long, with their K beams each; model state dropped for finished ones."""
        device = self.log_prob.device
        sentences = to_device_async(keep, device)  # no second host sync in this step
        rows = (sentences.unsqueeze(1) * beam_size + torch.arange(beam_size, device=device)).view(-1)
        return _Beams(
            sentence=self.sentence[keep], limits=self.limits[keep], limit_rows=self.limit_rows[rows],
            bound_penalty=self.bound_penalty[sentences],
            enc=self.enc.index_select(sentences) if keep_model_state else None,
            state=self.state.index_select(rows) if keep_model_state else None,
            log_prob=self.log_prob[sentences], history=self.history[rows],
            attention=None if self.attention is None else self.attention[rows],
            store=self.store.select(sentences))


def _top_candidates(log_prob: Tensor, beam_log_prob: Tensor, beam_tokens: Tensor, beam_size: int) -> _Candidates:
    """log_prob (A, K) of the open beams + the k best tokens of each beam, beam_log_prob and beam_tokens (A*K, k),
    -> the top K extensions of each sentence.

    All candidates of a step have the same length, so ranking by log-probability is ranking by score.
    Two stages, cheaper than one top-K over K*V: a token outside its own beam's top K cannot be
    among the sentence's top K (its beam alone offers K better), so the K best of each beam suffice.
    """
    num_sentences, per_beam = log_prob.size(0), beam_log_prob.size(1)
    candidates = (log_prob.view(-1, 1) + beam_log_prob).view(num_sentences, beam_size * per_beam)
    top_log_prob, top_index = candidates.topk(beam_size, dim=1)
    return _Candidates(log_prob=top_log_prob, origin=torch.div(top_index, per_beam, rounding_mode="floor"),
                       tgt_ids=beam_tokens.view(num_sentences, -1).gather(1, top_index))


def _open_bound(log_prob: Tensor, bound_penalty: Tensor) -> Tensor:
    """The best final score any open beam of each sentence can still reach: log_prob (B, K) -> (B,).

    An open beam with log-probability s <= 0 ends with some s' <= s (log-probabilities
    only decrease) at a length |Y| <= M + 1, the sentence's output limit plus EOS. As
    lp is non-decreasing in |Y| and s' is not positive, s' / lp(|Y|) <= s / lp(|Y|) <= s / lp(M + 1).
    So s / lp(M + 1) bounds it exactly, whatever alpha >= 0 is (alpha = 0 gives s).
    Empty slots hold -inf and bound nothing.
    """
    return (log_prob / bound_penalty.unsqueeze(1)).max(dim=1).values


def _extend_attention(history: Tensor | None, attention: Tensor, flat_origin: Tensor) -> Tensor:
    """history (B*K, t, S) | None, attention (B*K, S) of this step -> (B*K, t + 1, S) reordered by beam origin."""
    step_rows = attention.index_select(0, flat_origin).unsqueeze(1)
    if history is None:
        return step_rows
    return torch.cat([history.index_select(0, flat_origin), step_rows], dim=1)


def _empty_store(batch_size: int, capacity: int, max_steps: int, device: torch.device) -> _FinishedStore:
    """An empty finished list; its attention appears with the first attention the model returns."""
    return _FinishedStore(
        score=torch.full((batch_size, capacity), NEG_INF, device=device),
        log_prob=torch.full((batch_size, capacity), NEG_INF, device=device),
        length=torch.zeros(batch_size, capacity, dtype=torch.long, device=device),
        tgt_ids=torch.full((batch_size, capacity, max_steps), PAD_ID, dtype=torch.long, device=device),
        attention=None)


def _add_finished(store: _FinishedStore, log_prob: Tensor, is_eos: Tensor, history: Tensor,
                  attention_history: Tensor | None, step: int, alpha: float) -> _FinishedStore:
    """Merge the hypotheses that just emitted EOS (is_eos (B, K)) into the store, keeping the best F.

    history (B*K, step + 1) ends with this step's tokens; every new hypothesis has |Y| = step + 1.
    """
    batch_size, beam_size = is_eos.shape
    capacity, max_steps = store.score.size(1), store.tgt_ids.size(2)
    new_score = (log_prob / length_penalty(float(step + 1), alpha)).masked_fill(~is_eos, NEG_INF)
    score, keep = torch.cat([store.score, new_score], dim=1).topk(capacity, dim=1)
    new_ids = torch.nn.functional.pad(history.view(batch_size, beam_size, -1), (0, max_steps - step - 1),
                                      value=PAD_ID)
    tgt_ids = torch.cat([store.tgt_ids, new_ids], dim=1).gather(1, keep.unsqueeze(2).expand(-1, -1, max_steps))
    new_length = torch.full_like(log_prob, step, dtype=torch.long)
    attention = store.attention
    if attention_history is not None:
        src_len = attention_history.size(2)
        if attention is None:
            attention = attention_history.new_zeros(batch_size, capacity, max_steps, src_len)
        new_attention = torch.nn.functional.pad(
            attention_history.view(batch_size, beam_size, step + 1, -1), (0, 0, 0, max_steps - step - 1))
        attention = torch.cat([attention, new_attention], dim=1).gather(
            1, keep.view(batch_size, capacity, 1, 1).expand(-1, -1, max_steps, src_len))
    return _FinishedStore(
        score=score,
        log_prob=torch.cat([store.log_prob, log_prob], dim=1).gather(1, keep),
        length=torch.cat([store.length, new_length], dim=1).gather(1, keep),
        tgt_ids=tgt_ids, attention=attention)


def _beam_hypotheses(parts: list[_Beams], src_lengths: Tensor) -> list[list[Hypothesis]]:
    """The finite entries of each finished sentence's store, best first, as Hypotheses."""
    nbest_lists: list[list[Hypothesis]] = [[] for _ in range(len(src_lengths))]
    for part in parts:
        store = part.store
        scores, log_probs, lengths = store.score.tolist(), store.log_prob.tolist(), store.length.tolist()
        tgt_ids = store.tgt_ids.tolist()
        for row, sentence in enumerate(part.sentence.tolist()):
            for slot, score in enumerate(scores[row]):
                if math.isinf(score):
                    continue
                length = lengths[row][slot]
                attention = None
                if store.attention is not None:
                    attention = store.attention[row, slot, :length + 1, :int(src_lengths[sentence])].cpu()
                nbest_lists[sentence].append(Hypothesis(tgt_ids=tgt_ids[row][slot][:length], score=score,
                                                        log_prob=log_probs[row][slot], attention=attention))
    return nbest_lists
