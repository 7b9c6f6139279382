"""Greedy and beam search, driven only by the model's step API.

Both searches see the model through three calls: ``encode(src_ids, src_lengths)``,
``init_state(enc)`` and ``decode_step(prev_ids, state, enc) -> (log_probs, state, attention)``,
plus ``index_select`` on the encoder output and the decoder state. Sentences (and, in
beam search, beams) are processed together as rows of one tensor: there is no Python
loop over them, and each step synchronises with the host once, to ask whether every
sentence has finished.

Conventions shared by both:

- The output limit of a sentence is ``M = floor(max_length_a * src_length + max_length_b)``
  tokens before EOS; at step M only EOS is allowed. EOS is blocked while fewer than
  ``min_length`` tokens have been produced (the limit wins if the two clash).
- PAD and BOS are never produced (the model is never trained to output them).
- ``|Y|`` counts the output tokens *including* EOS, and a hypothesis is ranked by the
  GNMT score ``log P(Y) / lp(|Y|)`` with ``lp(|Y|) = ((5 + |Y|) / 6) ** alpha``
  (Wu et al. 2016, eq. 14); ``alpha = 0`` ranks by log-probability.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .config import DecodeConfig
from .tokenizer import BOS_ID, EOS_ID, PAD_ID

NEG_INF = float("-inf")


@dataclass
class Hypothesis:
    """One translation of one source sentence, as token ids."""

    tgt_ids: list[int]  # the output tokens, EOS excluded
    score: float  # log_prob / lp(len(tgt_ids) + 1): what the search ranks by
    log_prob: float  # sum of the token log-probabilities, EOS included
    attention: Tensor | None = None  # (len(tgt_ids) + 1, src_length), one row per output token, EOS last


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


def length_penalty(lengths: Tensor | float, alpha: float) -> Tensor | float:
    """GNMT length penalty lp(|Y|) = ((5 + |Y|) / 6) ** alpha, elementwise; |Y| counts EOS."""
    return ((5.0 + lengths) / 6.0) ** alpha


def max_output_lengths(src_lengths: Tensor, options: DecodeConfig) -> Tensor:
    """src_lengths (B,) -> (B,) int64 on the CPU: the most tokens before EOS, floor(a * src_length + b)."""
    limits = torch.floor(options.max_length_a * src_lengths.to("cpu", torch.float64) + options.max_length_b)
    return limits.long()


def greedy_search(model: Any, src_ids: Tensor, src_lengths: Tensor, options: DecodeConfig | None = None,
                  return_attention: bool = False) -> list[Hypothesis]:
    """Pick the most probable token at each step. src_ids (B, S), src_lengths (B,) -> one Hypothesis per sentence.

    Each sentence stops at its EOS (later steps feed it PAD and leave its score alone);
    the batch stops when every sentence has. ``options.beam_size`` and ``nbest`` are ignored.
    """
    options = options or DecodeConfig()
    limits = max_output_lengths(src_lengths, options)
    device = src_ids.device
    enc = model.encode(src_ids, src_lengths)
    state = model.init_state(enc)
    batch_size = src_ids.size(0)
    limit_rows = limits.to(device)
    prev_ids = torch.full((batch_size,), BOS_ID, dtype=torch.long, device=device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    log_prob = torch.zeros(batch_size, dtype=torch.float32, device=device)
    history = torch.empty(batch_size, 0, dtype=torch.long, device=device)
    attention_steps: list[Tensor] = []
    for step in range(int(limits.max()) + 1):
        log_probs, state, attention = model.decode_step(prev_ids, state, enc)
        log_probs = mask_log_probs(log_probs.float(), step=step, limits=limit_rows, options=options, history=history)
        step_log_prob, tgt_ids = log_probs.max(dim=1)
        tgt_ids = tgt_ids.masked_fill(finished, PAD_ID)
        log_prob = log_prob + step_log_prob.masked_fill(finished, 0.0)
        history = torch.cat([history, tgt_ids.unsqueeze(1)], dim=1)
        if return_attention and attention is not None:
            attention_steps.append(attention.float())
        finished = finished | (tgt_ids == EOS_ID)
        if bool(finished.all()):  # the one host synchronisation per step
            break
        prev_ids = tgt_ids
    attention_all = torch.stack(attention_steps, dim=1) if attention_steps else None  # (B, T, S)
    return _greedy_hypotheses(history, log_prob, attention_all, src_lengths, options.length_penalty)


def _greedy_hypotheses(history: Tensor, log_prob: Tensor, attention: Tensor | None, src_lengths: Tensor,
                       alpha: float) -> list[Hypothesis]:
    """history (B, T) with one EOS per row, log_prob (B,), attention (B, T, S) | None -> Hypotheses."""
    hypotheses = []
    for row, (ids, total) in enumerate(zip(history.tolist(), log_prob.tolist())):
        length = ids.index(EOS_ID)
        hypotheses.append(Hypothesis(
            tgt_ids=ids[:length], score=total / length_penalty(length + 1, alpha), log_prob=total,
            attention=None if attention is None else attention[row, :length + 1, :int(src_lengths[row])].cpu()))
    return hypotheses


def beam_search(model: Any, src_ids: Tensor, src_lengths: Tensor, options: DecodeConfig | None = None,
                return_attention: bool = False) -> list[list[Hypothesis]]:
    """Beam search over B sentences x K beams at once -> per sentence, up to ``options.nbest`` Hypotheses, best first.

    src_ids (B, S), src_lengths (B,). Each step scores the K x V extensions of a sentence's
    open beams and keeps the top K. An EOS among them moves that hypothesis to the
    sentence's finished list and leaves its slot empty for the step, so beam size 1 is
    exactly greedy search. The finished list is final once no open beam can beat its
    ``nbest``-th entry (see :func:`_open_bound`); the sentence then stops.
    """
    options = options or DecodeConfig()
    beam_size, nbest = options.beam_size, options.nbest
    limits = max_output_lengths(src_lengths, options)
    max_steps = int(limits.max()) + 1
    device = src_ids.device
    batch_size = src_ids.size(0)
    rows = batch_size * beam_size
    # Expand once per batch: each sentence's encoder output (and attention keys) K times.
    beam_origin = torch.arange(batch_size, device=device).repeat_interleave(beam_size)
    enc = model.encode(src_ids, src_lengths).index_select(beam_origin)
    state = model.init_state(enc)
    limit_rows = limits.to(device).repeat_interleave(beam_size)
    bound_penalty = length_penalty(limits.to(device, torch.float32) + 1.0, options.length_penalty)  # (B,)
    # Only the first beam of each sentence is alive at the start; the others are copies with score -inf.
    log_prob = torch.full((batch_size, beam_size), NEG_INF, device=device)
    log_prob[:, 0] = 0.0
    prev_ids = torch.full((rows,), BOS_ID, dtype=torch.long, device=device)
    history = torch.empty(rows, 0, dtype=torch.long, device=device)
    attention_history: Tensor | None = None
    store = _empty_store(batch_size, nbest, max_steps, device)
    row_offset = (torch.arange(batch_size, device=device) * beam_size).unsqueeze(1)  # (B, 1)
    for step in range(max_steps):
        step_log_probs, state, attention = model.decode_step(prev_ids, state, enc)
        step_log_probs = mask_log_probs(step_log_probs.float(), step=step, limits=limit_rows, options=options,
                                        history=history)
        log_prob, origin, tgt_ids = _top_candidates(log_prob, step_log_probs, beam_size)
        flat_origin = (origin + row_offset).view(-1)
        state = state.index_select(flat_origin)
        history = torch.cat([history.index_select(0, flat_origin), tgt_ids.view(rows, 1)], dim=1)
        if return_attention and attention is not None:
            attention_history = _extend_attention(attention_history, attention.float(), flat_origin)
        is_eos = tgt_ids == EOS_ID
        store = _add_finished(store, log_prob, is_eos, history, attention_history, step, options.length_penalty)
        log_prob = log_prob.masked_fill(is_eos, NEG_INF)  # the slot of a finished hypothesis is empty
        done = store.score[:, nbest - 1] >= _open_bound(log_prob, bound_penalty)
        log_prob = log_prob.masked_fill(done.unsqueeze(1), NEG_INF)
        if bool(done.all()):  # the one host synchronisation per step
            break
        prev_ids = tgt_ids.view(rows)
    return _beam_hypotheses(store, src_lengths)


def _top_candidates(log_prob: Tensor, step_log_probs: Tensor, beam_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """log_prob (B, K) of the open beams + step_log_probs (B*K, V) -> the top K extensions of each sentence.

    Returns their log-probabilities (B, K), the beam each extends (B, K) and its new token (B, K).
    All candidates of a step have the same length, so ranking by log-probability is ranking by score.
    """
    batch_size = log_prob.size(0)
    vocab_size = step_log_probs.size(1)
    candidates = (log_prob.view(-1, 1) + step_log_probs).view(batch_size, beam_size * vocab_size)
    top_log_prob, top_index = candidates.topk(beam_size, dim=1)
    return top_log_prob, torch.div(top_index, vocab_size, rounding_mode="floor"), top_index % vocab_size


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


def _beam_hypotheses(store: _FinishedStore, src_lengths: Tensor) -> list[list[Hypothesis]]:
    """The finite entries of the store, best first, as Hypotheses (one host transfer)."""
    scores, log_probs, lengths = store.score.tolist(), store.log_prob.tolist(), store.length.tolist()
    tgt_ids = store.tgt_ids.tolist()
    nbest_lists = []
    for row, row_scores in enumerate(scores):
        hypotheses = []
        for slot, score in enumerate(row_scores):
            if math.isinf(score):
                continue
            length = lengths[row][slot]
            attention = None
            if store.attention is not None:
                attention = store.attention[row, slot, :length + 1, :int(src_lengths[row])].cpu()
            hypotheses.append(Hypothesis(tgt_ids=tgt_ids[row][slot][:length], score=score,
                                         log_prob=log_probs[row][slot], attention=attention))
        nbest_lists.append(hypotheses)
    return nbest_lists


def mask_log_probs(log_probs: Tensor, *, step: int, limits: Tensor, options: DecodeConfig,
                   history: Tensor) -> Tensor:
    """Set to -inf the tokens a hypothesis may not take at this step. log_probs (N, V), limits (N,), history (N, step).

    PAD and BOS never; EOS before ``min_length`` tokens; a token completing an n-gram the
    hypothesis already holds (``no_repeat_ngram``); anything but EOS once the output limit
    is reached. EOS is never left blocked when it is the only way out, so no hypothesis dies.
    """
    vocab_size = log_probs.size(1)
    blocked = torch.zeros_like(log_probs, dtype=torch.bool)
    blocked[:, PAD_ID] = True
    blocked[:, BOS_ID] = True
    if step < options.min_length:
        blocked[:, EOS_ID] = True
    if options.no_repeat_ngram and step >= options.no_repeat_ngram:
        blocked |= _repeated_ngram_mask(history, options.no_repeat_ngram, vocab_size)
    is_eos = torch.zeros(vocab_size, dtype=torch.bool, device=log_probs.device)
    is_eos[EOS_ID] = True
    at_limit = (limits <= step).unsqueeze(1)
    no_way_out = (blocked | is_eos).all(dim=1, keepdim=True)
    blocked = torch.where(at_limit | no_way_out, ~is_eos, blocked)
    return log_probs.masked_fill(blocked, NEG_INF)


def _repeated_ngram_mask(history: Tensor, n: int, vocab_size: int) -> Tensor:
    """history (N, t) with t >= n -> (N, V) bool: tokens that would repeat an n-gram already in the row.

    The last n - 1 tokens are compared with the first n - 1 tokens of every earlier
    n-gram; where they match, that n-gram's last token is banned.
    """
    ngrams = history.unfold(1, n, 1)  # (N, t - n + 1, n)
    prefix = history[:, history.size(1) - n + 1:]  # (N, n - 1)
    matches = (ngrams[:, :, :-1] == prefix.unsqueeze(1)).all(dim=2)  # (N, t - n + 1)
    # Non-matching n-grams scatter into an extra column that is dropped, so every write is True.
    banned = torch.where(matches, ngrams[:, :, -1], vocab_size)
    mask = torch.zeros(history.size(0), vocab_size + 1, dtype=torch.bool, device=history.device)
    return mask.scatter_(1, banned, True)[:, :vocab_size]


def search(model: Any, src_ids: Tensor, src_lengths: Tensor, options: DecodeConfig,
           return_attention: bool = False) -> list[list[Hypothesis]]:
    """Greedy search when ``options.beam_size`` is 1 (the same result, faster), beam search otherwise."""
    if options.beam_size == 1:
        return [[hypothesis] for hypothesis in greedy_search(model, src_ids, src_lengths, options, return_attention)]
    return beam_search(model, src_ids, src_lengths, options, return_attention)
