"""What greedy and beam search share: the Hypothesis they return, the length penalty, output limits, token masks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from ..config import DecodeConfig
from ..ids import BOS_ID, EOS_ID, PAD_ID
from ..model.top_tokens import TopTokens, top_k_by_blocks

NEG_INF = float("-inf")


class StepModel(Protocol):
    """What a search needs of a model: ``Seq2Seq`` (and an ensemble of them) provide it.

    ``encode`` returns an object with ``index_select(rows)``; ``init_state`` and
    ``decode_step`` return a state with ``index_select(rows)`` too. ``decode_step`` gives
    log-probabilities (N, V), the next state and the attention (N, S) or None. A model may also offer
    ``decode_top(prev_ids, state, enc, k, banned) -> TopTokens``, the same step reduced to its k best
    tokens (``Seq2Seq`` does, without the (N, V) log-probabilities). The encoding passed
    to ``decode_step`` may have B rows for N = G * B state rows: state row n then belongs to
    sentence n // G (beam search keeps a sentence's G beams on consecutive rows).
    """

    def encode(self, src_ids: Tensor, src_lengths: Tensor) -> Any: ...

    def init_state(self, enc: Any) -> Any: ...

    def decode_step(self, prev_ids: Tensor, state: Any, enc: Any) -> tuple[Tensor, Any, Tensor | None]: ...


@dataclass
class Hypothesis:
    """One translation of one source sentence, as token ids."""

    tgt_ids: list[int]  # the output tokens, EOS excluded
    score: float  # log_prob / lp(len(tgt_ids) + 1): what the search ranks by
    log_prob: float  # sum of the token log-probabilities, EOS included
    attention: Tensor | None = None  # (len(tgt_ids) + 1, src_length), one row per output token, EOS last


def length_penalty(lengths: Tensor | float, alpha: float) -> Tensor | float:
    """GNMT length penalty lp(|Y|) = ((5 + |Y|) / 6) ** alpha, elementwise; |Y| counts EOS."""
    return ((5.0 + lengths) / 6.0) ** alpha


def max_output_lengths(src_lengths: Tensor, options: DecodeConfig) -> Tensor:
    """src_lengths (B,) -> (B,) int64 on the CPU: the most tokens before EOS, floor(a * src_length + b)."""
    limits = torch.floor(options.max_length_a * src_lengths.to("cpu", torch.float64) + options.max_length_b)
    return limits.long()


def mask_log_probs(log_probs: Tensor, *, step: int, limits: Tensor, shortest_limit: int, options: DecodeConfig,
                   history: Tensor) -> Tensor:
    """Set to -inf, in place, the tokens a hypothesis may not take at this step; returns log_probs.

    log_probs (N, V) float32, limits (N,) the output limit of each row (``shortest_limit`` is
    their minimum, known on the host), history (N, step) the tokens so far.
    PAD and BOS never; EOS before ``min_length`` tokens; a token completing an n-gram the
    hypothesis already holds (``no_repeat_ngram``); anything but EOS once the output limit
    is reached. EOS is never left blocked when it is the only way out, so no hypothesis dies.
    Only column writes happen on the common path: full (N, V) passes only when a rule applies.
    """
    log_probs[:, PAD_ID] = NEG_INF
    log_probs[:, BOS_ID] = NEG_INF
    eos_log_probs = log_probs[:, EOS_ID].clone()
    eos_blocked = _eos_blocked(step, options)
    if eos_blocked:
        log_probs[:, EOS_ID] = NEG_INF
    if _ngram_rule_applies(step, options):
        log_probs.masked_fill_(_repeated_ngram_mask(history, options.no_repeat_ngram, log_probs.size(1)), NEG_INF)
        if eos_blocked:  # log_softmax is finite, so an all -inf row has nothing left but EOS
            no_way_out = torch.isneginf(log_probs).all(dim=1)
            log_probs[:, EOS_ID] = torch.where(no_way_out, eos_log_probs, log_probs[:, EOS_ID])
    if _some_row_at_limit(step, shortest_limit):
        at_limit = limits <= step
        log_probs.masked_fill_(at_limit.unsqueeze(1), NEG_INF)
        log_probs[:, EOS_ID] = torch.where(at_limit, eos_log_probs, log_probs[:, EOS_ID])
    return log_probs


def _eos_blocked(step: int, options: DecodeConfig) -> bool:
    return step < options.min_length


def _ngram_rule_applies(step: int, options: DecodeConfig) -> bool:
    return bool(options.no_repeat_ngram) and step >= options.no_repeat_ngram


def _some_row_at_limit(step: int, shortest_limit: int) -> bool:
    return step >= shortest_limit


def top_next_tokens(model: StepModel, prev_ids: Tensor, state: Any, enc: Any, k: int, *, step: int,
                    limits: Tensor, shortest_limit: int, options: DecodeConfig, history: Tensor) -> TopTokens:
    """The k best next tokens of each row under the rules of :func:`mask_log_probs` (arguments as there):
    TopTokens(log_probs (N, k) float32 best first, ids (N, k), next state, attention).

    When the rules ban only PAD and BOS at this step (EOS allowed, no n-gram rule, no row at its
    limit: every step but the last few) and the model has ``decode_top``, that computes them;
    otherwise they come from the masked ``decode_step`` log-probabilities.
    """
    decode_top = getattr(model, "decode_top", None)
    only_pad_and_bos = not (_eos_blocked(step, options) or _ngram_rule_applies(step, options)
                            or _some_row_at_limit(step, shortest_limit))
    if decode_top is not None and only_pad_and_bos:
        return decode_top(prev_ids, state, enc, k, (PAD_ID, BOS_ID))
    log_probs, state, attention = model.decode_step(prev_ids, state, enc)
    log_probs = mask_log_probs(log_probs.float(), step=step, limits=limits, shortest_limit=shortest_limit,
                               options=options, history=history)
    best, ids = top_k_by_blocks(log_probs, min(k, log_probs.size(1)))
    return TopTokens(best, ids, state, attention)


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
