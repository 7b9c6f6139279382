"""Greedy and beam search, driven only by the model's step API (:class:`StepModel`).

Both searches see the model through three calls: ``encode(src_ids, src_lengths)``,
``init_state(enc)`` and ``decode_step(prev_ids, state, enc) -> (log_probs, state, attention)``,
plus ``index_select`` on the encoder output and the decoder state. Greedy and beam search use the
model's ``decode_top`` instead where it has one and only PAD and BOS are banned at the step: the
k best tokens without the (N, V) log-probabilities (:mod:`seq2seq.model.top_tokens`). Sentences (and, in
beam search, beams) are processed together as rows of one tensor: there is no Python
loop over them. Each step synchronises with the host once, to learn which sentences
have finished; those leave the batch (its tensors are compacted with ``index_select``),
so long sentences do not make the short ones pay for extra steps.

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


import torch
from torch import Tensor

from ..config import DecodeConfig
from ..device import resolve_decode_amp
from .beam import beam_search
from .common import Hypothesis, StepModel, length_penalty, mask_log_probs, max_output_lengths
from .greedy import greedy_search
from .sampling import sample_search

__all__ = ["Hypothesis", "StepModel", "beam_search", "greedy_search", "length_penalty", "mask_log_probs",
           "max_output_lengths", "sample_search", "search"]


def search(model: StepModel, src_ids: Tensor, src_lengths: Tensor, options: DecodeConfig,
           return_attention: bool = False, generator: torch.Generator | None = None) -> list[list[Hypothesis]]:
    """Greedy search when ``options.beam_size`` is 1 (the same result, faster), beam search otherwise,
    sampling with ``options.sampling`` (from ``generator``, else one seeded with ``options.seed``),
    without gradients and in the precision ``options.amp`` resolves to on the device of ``src_ids``.

    This runs under ``no_grad`` rather than ``inference_mode``: autocast keeps one low-precision
    copy of each weight for the whole search only outside inference mode (inside it, torch casts
    every weight again at every step, which costs more than bf16 saves).
    """
    # Sampling reads the distribution one row per sample, as greedy search does: it takes greedy's precision.
    amp = resolve_decode_amp(options.amp, src_ids.device, 1 if options.sampling else options.beam_size)
    with torch.no_grad(), torch.autocast(src_ids.device.type, dtype=amp.dtype, enabled=amp.enabled):
        if options.sampling:
            if generator is None:
                generator = torch.Generator(src_ids.device).manual_seed(options.seed)
            return sample_search(model, src_ids, src_lengths, options, generator, return_attention)
        if options.beam_size == 1:
            return [[hypothesis]
                    for hypothesis in greedy_search(model, src_ids, src_lengths, options, return_attention)]
        return beam_search(model, src_ids, src_lengths, options, return_attention)
