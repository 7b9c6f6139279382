"""Tokenizers from outside the training loop's own SentencePiece training: a given model file
(``tokenizer.model``, or ``src_model`` + ``tgt_model``), and subword regularisation of training
batches (``tokenizer.sampling_alpha``: SentencePiece sampling, Kudo 2018; BPE-dropout for BPE models).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sentencepiece as spm

from ..config import TokenizerConfig
from ..errors import DataError
from ..ids import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from .tokenizer import Tokenizer, load_processor


def tokenizer_from_files(cfg: TokenizerConfig) -> Tokenizer | None:
    """The tokenizer of the SentencePiece model file(s) ``tokenizer.model`` (joint) or ``src_model`` +
    ``tgt_model``; None when the config names none. A missing or unfit file raises DataError naming it."""
    if cfg.model:
        return Tokenizer(_read_model(cfg.model, "tokenizer.model"))
    if cfg.src_model:
        return Tokenizer(_read_model(cfg.src_model, "tokenizer.src_model"),
                         _read_model(cfg.tgt_model, "tokenizer.tgt_model"))
    return None


def _read_model(path: str, key: str) -> bytes:
    """The bytes of a SentencePiece model file, checked to load with this package's special ids."""
    if not Path(path).is_file():
        raise DataError(f"{key}: SentencePiece model file not found: {path}")
    proto = Path(path).read_bytes()
    try:
        load_processor(proto, f"{key} = {path}")
    except DataError as exc:
        raise DataError(f"{exc}. Train it with spm_train --pad_id={PAD_ID} --unk_id={UNK_ID} --bos_id={BOS_ID} "
                        f"--eos_id={EOS_ID}, or drop {key} to train one here") from None
    return proto


class SubwordSampler:
    """Subword regularisation for training batches: the pairs re-segmented by SentencePiece sampling.

    Called by ``EncodedCorpus.collate`` with the pair indices of a batch; returns their source
    and target ids from a sampled segmentation of the raw text (``corpus.src_text[i]``). A
    segmentation longer than ``max_length`` falls back to the deterministic one, which training
    kept. SentencePiece draws from one process-wide generator: :meth:`reseed` sets it from the
    training seed and the step before each update, so a resumed run draws the same pieces.
    """

    def __init__(self, tokenizer: Tokenizer, corpus: Any, alpha: float, nbest: int, max_length: int,
                 seed: int) -> None:
        self.tokenizer = tokenizer
        self.corpus = corpus
        self.alpha = alpha
        self.nbest = nbest
        self.max_length = max_length
        self.seed = seed

    @classmethod
    def for_training(cls, cfg: TokenizerConfig, tokenizer: Tokenizer, corpus: Any, max_length: int,
                     seed: int) -> SubwordSampler | None:
        """The sampler ``tokenizer.sampling_alpha`` asks for, or None when it is 0 (off)."""
        if cfg.sampling_alpha <= 0:
            return None
        return cls(tokenizer, corpus, cfg.sampling_alpha, cfg.sampling_nbest, max_length, seed)

    def reseed(self, step: int) -> None:
        """Make the next draws a function of (train.seed, step) only."""
        spm.set_random_generator_seed((self.seed * 1_000_003 + step) % 2 ** 32)

    def __call__(self, rows: list[int]) -> tuple[list[list[int]], list[list[int]]]:
        """Pair indices -> (source ids, target ids) of one sampled segmentation each, no BOS/EOS."""
        src_ids, tgt_ids = [], []
        for row in rows:
            src_text, tgt_text = self.corpus.src_text[row], self.corpus.tgt_text[row]
            src = self.tokenizer.sample_src(src_text, self.alpha, self.nbest)
            tgt = self.tokenizer.sample_tgt(tgt_text, self.alpha, self.nbest)
            if not src or len(src) > self.max_length:
                src = self.tokenizer.encode_src(src_text)
            if not tgt or len(tgt) > self.max_length:
                tgt = self.tokenizer.encode_tgt(tgt_text)
            src_ids.append(src)
            tgt_ids.append(tgt)
        return src_ids, tgt_ids
