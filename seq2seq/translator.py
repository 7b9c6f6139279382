"""The :class:`Translator`: a model with its tokenizer and config, translating sentences in length-sorted batches.

Input is read in chunks of :data:`CHUNK_LINES` lines; inside a chunk the sentences are
sorted by length and cut into batches of at most ``decode.batch_size`` source tokens
(padding included), so batches waste little on padding and memory stays flat however
long the input is. Output comes back in input order.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .checkpoint import load_model
from .config import Config, DecodeConfig
from .data.batches import pad_ids
from .device import resolve_decode_amp, resolve_device
from .ensemble import Ensemble
from .errors import CheckpointError, ConfigError
from .forced import PairScore, score_pairs
from .search import Hypothesis, search
from .search.workers import map_on_workers, plan_batches

logger = logging.getLogger(__name__)

CHUNK_LINES = 5000  # lines read, sorted and translated together; bounds memory on endless input


@dataclass
class Translation:
    """One hypothesis as text: ``score`` is the length-normalised log-probability search ranks by."""

    text: str
    score: float
    tgt_ids: list[int]
    attention: Tensor | None = None  # (len(tgt_ids) + 1, len(src_ids)): rows are output pieces, EOS last
    log_prob: float = 0.0  # the sum of the token log-probabilities, EOS included (score before normalising)


@dataclass
class TranslatedLine:
    """An input line and its translations, best first (a single empty one for an empty line)."""

    number: int  # 1-based line number in the input
    src_text: str
    src_ids: list[int]  # as the encoder read them, after truncation
    nbest: list[Translation]

    @property
    def best(self) -> str:
        return self.nbest[0].text if self.nbest else ""


class Translator:
    """A loaded checkpoint, ready to translate: ``Translator.from_checkpoint(path).translate(["Ein Hund ."])``.

    ``model``, ``tokenizer`` and ``config`` are those the checkpoint was trained with;
    ``config.decode`` holds the default search settings.

    >>> translator = Translator.from_pretrained("runs/quickstart/model")  # doctest: +SKIP
    >>> translator.translate(["la navo fela amat."], beam_size=5)  # doctest: +SKIP
    """

    def __init__(self, model: Any, tokenizer: Any, config: Config, device: torch.device) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.device = device

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> Translator:
        """Load a checkpoint onto ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N`` or a torch.device).

        >>> Translator.from_checkpoint("runs/quickstart/best.pt").translate(["la navo fela amat."])  # doctest: +SKIP
        """
        resolved = resolve_device(device) if isinstance(device, str) else device
        loaded = load_model(path, resolved)
        return cls(loaded.model, loaded.tokenizer, loaded.config, resolved)

    @classmethod
    def from_checkpoints(cls, paths: list[str | Path], device: str | torch.device = "cpu") -> Translator:
        """An ensemble of the checkpoints ``paths`` (see :mod:`seq2seq.ensemble`); one path gives the plain model.

        All must hold the same tokenizer (so one target vocabulary), else CheckpointError names
        the files. ``config`` (decode defaults, ``data.max_length``) is that of the first.
        """
        if not paths:
            raise CheckpointError("no checkpoint given")
        if len(paths) == 1:
            return cls.from_checkpoint(paths[0], device)
        resolved = resolve_device(device) if isinstance(device, str) else device
        loaded = [load_model(path, resolved) for path in paths]
        fingerprint = loaded[0].tokenizer.fingerprint()
        for path, member in zip(paths[1:], loaded[1:]):
            if member.tokenizer.target_order != loaded[0].tokenizer.target_order:
                raise CheckpointError(f"cannot ensemble {paths[0]} and {path}: one writes its targets "
                                      f"{loaded[0].tokenizer.target_order}, the other {member.tokenizer.target_order} "
                                      f"(tokenizer.target_order); a right-to-left model can rerank the other's "
                                      f"translations instead: --rescore")
            if member.tokenizer.fingerprint() != fingerprint:
                raise CheckpointError(f"cannot ensemble {paths[0]} and {path}: the tokenizer differs, so their "
                                      f"vocabularies do not match; an ensemble needs models trained with one tokenizer")
        return cls(Ensemble([member.model for member in loaded]).eval(), loaded[0].tokenizer, loaded[0].config,
                   resolved)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: str | torch.device = "cpu",
                        revision: str | None = None, cache_dir: str | Path | None = None) -> Translator:
        """Load a model folder written by ``seq2seq export``, or download one from the Hugging Face Hub.

        ``name_or_path`` is a local folder or a hub id (``user/model``, fetched once into the
        hub cache). Nothing in the folder is unpickled: weights are safetensors, the config YAML.

        >>> translator = Translator.from_pretrained("exported/quickstart")  # doctest: +SKIP
        >>> translator.translate(["la hundo dormas."])  # doctest: +SKIP
        """
        from .hub import load_pretrained

        resolved = resolve_device(device) if isinstance(device, str) else device
        loaded = load_pretrained(name_or_path, resolved, revision=revision, cache_dir=cache_dir)
        return cls(loaded.model, loaded.tokenizer, loaded.config, resolved)

    @property
    def has_attention(self) -> bool:
        """Whether search returns attention: for an ensemble, whether any member has attention."""
        if isinstance(self.model, Ensemble):
            return any(member.attention_type != "none" for member in self.model.members)
        return self.config.model.attention != "none"

    def score_pairs(self, sources: list[str], targets: list[str], batch_size: int | None = None) -> list[PairScore]:
        """Forced decoding: the log-probability the model gives each target given its source.

        Returns one :class:`PairScore` per pair (sum, mean and per-token
        log-probabilities, EOS included); ``batch_size`` in tokens defaults to ``decode.batch_size``.
        """
        return score_pairs(self.model, self.tokenizer, sources, targets, max_length=self.config.data.max_length,
                           batch_size=batch_size or self.config.decode.batch_size, device=self.device)

    def decode_options(self, overrides: dict[str, Any] | None = None) -> DecodeConfig:
        """The checkpoint's ``decode`` settings with ``overrides`` (field name -> value) applied and validated."""
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(DecodeConfig)})
        if unknown:
            raise ConfigError(f"unknown decode setting(s) {', '.join(unknown)}; "
                              f"valid: {', '.join(f.name for f in dataclasses.fields(DecodeConfig))}")
        if "beam_size" in overrides and "nbest" not in overrides:
            # A smaller beam than the checkpoint's default nbest would be rejected; keep nbest within the beam.
            overrides["nbest"] = min(self.config.decode.nbest, overrides["beam_size"])
        options = dataclasses.replace(self.config.decode, **overrides)
        resolve_decode_amp(options.amp, self.device, options.beam_size)  # refuse an impossible precision up front
        return options

    def translate(self, sentences: list[str], beam_size: int | None = None,
                  options: DecodeConfig | None = None) -> list[str]:
        """The best translation of each sentence, in order. ``options`` defaults to the checkpoint's decode settings."""
        options = options or self.config.decode
        if beam_size is not None:
            options = dataclasses.replace(options, beam_size=beam_size, nbest=min(options.nbest, beam_size))
        lines = self.translate_lines(enumerate(sentences, start=1), options)
        return [line.best for line in lines]

    def translate_lines(self, lines: Iterable[tuple[int, str]], options: DecodeConfig | None = None,
                        return_attention: bool = False, chunk_lines: int = CHUNK_LINES,
                        name: str = "<input>") -> Iterator[TranslatedLine]:
        """Translate ``(line_number, text)`` pairs lazily, yielding them in input order.

        A line longer than ``data.max_length`` subword tokens is truncated with a warning
        naming ``name`` and the line number; an empty line gives an empty translation.
        """
        options = options or self.config.decode
        # With decode.sampling, one generator for the whole input: the same seed and input, the same samples.
        generator = torch.Generator(self.device).manual_seed(options.seed) if options.sampling else None
        chunk: list[tuple[int, str]] = []
        for item in lines:
            chunk.append(item)
            if len(chunk) >= chunk_lines:
                yield from self._translate_chunk(chunk, options, return_attention, name, generator)
                chunk = []
        if chunk:
            yield from self._translate_chunk(chunk, options, return_attention, name, generator)

    def _translate_chunk(self, chunk: list[tuple[int, str]], options: DecodeConfig, return_attention: bool,
                         name: str, generator: torch.Generator | None = None) -> list[TranslatedLine]:
        src_ids = self._encode(chunk, name)
        nbest_lists: list[list[Hypothesis]] = [[] for _ in chunk]
        for batch, results in self._search_batches(src_ids, options, return_attention, generator):
            for index, nbest in zip(batch, results):
                nbest_lists[index] = nbest
        return [TranslatedLine(number=number, src_text=text, src_ids=ids,
                               nbest=self._to_translations(ids, nbest))
                for (number, text), ids, nbest in zip(chunk, src_ids, nbest_lists)]

    def _search_batches(self, src_ids: list[list[int]], options: DecodeConfig, return_attention: bool,
                        generator: torch.Generator | None) -> list[tuple[list[int], list[list[Hypothesis]]]]:
        """Each length-sorted batch of ``src_ids`` (indices) with its n-best lists; on a CPU,
        ``decode.workers`` batches at a time (see :mod:`seq2seq.search.workers`)."""
        batches, workers = plan_batches([len(ids) for ids in src_ids], options.batch_size, options.workers,
                                        self.device, options.sampling)
        results = map_on_workers(
            lambda batch: self.search_ids([src_ids[i] for i in batch], options, return_attention, generator),
            batches, workers)
        return list(zip(batches, results))

    def _encode(self, chunk: list[tuple[int, str]], name: str) -> list[list[int]]:
        """Source ids of each line, truncated to ``data.max_length`` with a warning naming the line."""
        max_length = self.config.data.max_length
        encoded = self.tokenizer.encode_src_batch([text for _, text in chunk])
        for (number, _), ids in zip(chunk, encoded):
            if len(ids) > max_length:
                logger.warning("%s, line %d: %d subword tokens, more than the model's data.max_length=%d; "
                               "truncated to the first %d", name, number, len(ids), max_length, max_length)
        return [ids[:max_length] for ids in encoded]

    def search_ids(self, src_ids: list[list[int]], options: DecodeConfig, return_attention: bool = False,
                   generator: torch.Generator | None = None) -> list[list[Hypothesis]]:
        """Search one batch of non-empty source id lists -> an n-best list per sentence (best first)."""
        padded, lengths = pad_ids(src_ids)
        return search(self.model, padded.to(self.device), lengths, options, return_attention, generator)

    def _to_translations(self, src_ids: list[int], nbest: list[Hypothesis]) -> list[Translation]:
        if not src_ids:
            return [Translation(text="", score=0.0, tgt_ids=[])]
        texts = self.tokenizer.decode_tgt_batch([h.tgt_ids for h in nbest])
        return [Translation(text=text, score=h.score, tgt_ids=h.tgt_ids, attention=h.attention, log_prob=h.log_prob)
                for text, h in zip(texts, nbest)]
