"""Reranking n-best lists with other models, typically right-to-left ones (``tokenizer.target_order``).

A left-to-right search commits to the start of a translation before it has seen the end, and
its errors gather at the end; a model that writes the target backwards errs the other way
round. Neither can search with the other step by step (their steps read different prefixes),
but one can score the other's finished translations by forced decoding. For each sentence the
main model's whole beam (``decode.beam_size`` hypotheses) is scored by the rescoring model(s)
and reranked by

    ((1 - w) * log P_main(y | x) + w * log P_rescore(y | x)) / lp(|y|)

with the search's GNMT length penalty lp and ``w`` the rescoring weight. Several rescoring
checkpoints score as one ensemble. The rescorers read the translations as text, so they need
not share the main model's tokenizer.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from .config import DecodeConfig
from .errors import ConfigError
from .search import length_penalty
from .translator import TranslatedLine, Translation, Translator

CHUNK_LINES = 1000  # lines whose n-best lists are scored together (sorted into length batches)


class Rescorer:
    """The model(s) that rerank n-best lists, and the weight of their log-probability (0 < weight <= 1).

    >>> rescorer = Rescorer.from_checkpoints(["runs/r2l/best.pt"], weight=0.5)  # doctest: +SKIP
    >>> options = rescorer.search_options(translator.decode_options())  # doctest: +SKIP
    >>> lines = rescorer.rerank(translator.translate_lines(numbered, options), options)  # doctest: +SKIP
    """

    def __init__(self, translator: Translator, weight: float) -> None:
        if not 0.0 < weight <= 1.0:
            raise ConfigError(f"--rescore-weight must be in (0, 1], got {weight}: 0 would ignore the rescoring "
                              f"models, 1 ignores the main model's own score")
        self.translator = translator
        self.weight = weight

    @classmethod
    def from_checkpoints(cls, paths: list[str | Path], weight: float, device: str | torch.device = "cpu") -> Rescorer:
        """The rescoring checkpoints ``paths`` (several score as an ensemble) with the given weight."""
        return cls(Translator.from_checkpoints(paths, device), weight)

    def search_options(self, options: DecodeConfig) -> DecodeConfig:
        """``options`` with the whole beam kept (n-best = beam size), so that there is something to rerank."""
        if options.sampling:
            if options.nbest < 2:
                raise ConfigError("--rescore with --sampling needs --nbest 2 or more samples per sentence to rerank")
            return options
        if options.beam_size < 2:
            raise ConfigError("--rescore reranks the beam: it needs --beam-size 2 or more (greedy search keeps one "
                              "translation per sentence)")
        return dataclasses.replace(options, nbest=options.beam_size)

    def rerank(self, lines: Iterable[TranslatedLine], options: DecodeConfig,
               chunk_lines: int = CHUNK_LINES) -> Iterator[TranslatedLine]:
        """The lines with each n-best list reordered by the combined score (which becomes each ``score``)."""
        iterator = iter(lines)
        while chunk := list(itertools.islice(iterator, chunk_lines)):
            yield from self._rerank_chunk(chunk, options.length_penalty)

    def _rerank_chunk(self, chunk: list[TranslatedLine], alpha: float) -> list[TranslatedLine]:
        scored = [(line, t) for line in chunk if line.src_ids for t in line.nbest]
        scores = self.translator.score_pairs([line.src_text for line, _ in scored], [t.text for _, t in scored])
        combined = {id(t): self._combined(t, score.log_prob, alpha) for (_, t), score in zip(scored, scores)}
        reranked = []
        for line in chunk:
            nbest = [dataclasses.replace(t, score=combined[id(t)]) for t in line.nbest] if line.src_ids else line.nbest
            reranked.append(dataclasses.replace(line, nbest=sorted(nbest, key=lambda t: -t.score)))
        return reranked

    def _combined(self, translation: Translation, rescore_log_prob: float, alpha: float) -> float:
        mixed = (1.0 - self.weight) * translation.log_prob + self.weight * rescore_log_prob
        return mixed / length_penalty(len(translation.tgt_ids) + 1, alpha)
