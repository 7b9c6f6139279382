"""Training SentencePiece models in-process, and caching them on disk.

Models are trained from the training corpus (a corpus of more than
:data:`MAX_TRAIN_SENTENCES` sentences is sampled by ``prepare``) and cached under a hash
of the text and the options, so running ``prepare`` or ``train`` again does not retrain.
A damaged cached model is reported and trained again.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import sentencepiece as spm

from ..config import TokenizerConfig
from ..errors import DataError
from ..ids import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from .cache import install_entry, scratch_directory, verify_entry, warn_damaged, write_manifest
from .tokenizer import Tokenizer, encoding_threads

TRAIN_SEED = 1  # sentencepiece samples and shuffles its input with this seed: same data, same model
MAX_TRAIN_SENTENCES = 2_000_000  # larger corpora are sampled (per model) to bound memory and time

logger = logging.getLogger(__name__)


def load_or_train_tokenizer(src_texts: Iterable[str], tgt_texts: Iterable[str], cfg: TokenizerConfig,
                            cache_root: Path, key: str | None = None) -> Tokenizer:
    """The tokenizer for this training text and these options: from the cache, or trained and cached.

    The cache directory is ``cache_root/tokenizer/<key>`` (default: a hash of the text and the
    options), written under a temporary name, checksummed and renamed: an interrupted run leaves
    no half-written model, and a damaged one is trained again with a warning naming it.
    """
    directory = cache_root / "tokenizer" / (key or tokenizer_key(src_texts, tgt_texts, cfg))
    cached = load_cached_tokenizer(directory)
    if cached is not None:
        return cached
    tokenizer = train_tokenizer(src_texts, tgt_texts, cfg)
    with scratch_directory(directory) as tmp:
        tokenizer.save(tmp)
        write_manifest(tmp)
        install_entry(tmp, directory)
    logger.info("tokenizer: trained %s vocabulary %s, cached in %s", cfg.type,
                tokenizer.src_vocab_size if tokenizer.joint
                else f"{tokenizer.src_vocab_size} / {tokenizer.tgt_vocab_size}", directory)
    return tokenizer


def load_cached_tokenizer(directory: Path) -> Tokenizer | None:
    """The tokenizer cached in ``directory``; None when there is none or it is damaged (then with a warning)."""
    problem = verify_entry(directory)
    if problem is None:
        try:
            return Tokenizer.load(directory)
        except (OSError, ValueError, KeyError, TypeError, DataError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
    if directory.exists():
        warn_damaged(directory, problem)
    return None


def stream_tokenizer_key(train_hash: str, cfg: TokenizerConfig) -> str:
    """The cache key of the tokenizer ``prepare`` trains on a sample of a corpus with content hash ``train_hash``."""
    key = ["sampled", MAX_TRAIN_SENTENCES, _options_for_key(cfg), spm.__version__, train_hash]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:24]


def tokenizer_key(src_texts: Sequence[str], tgt_texts: Sequence[str], cfg: TokenizerConfig) -> str:
    """A hash of the training text and every option that changes the model."""
    digest = hashlib.sha256(json.dumps([_options_for_key(cfg), spm.__version__]).encode())
    for texts in (src_texts, tgt_texts):
        digest.update(hash_texts(texts).encode())
    return digest.hexdigest()[:24]


def hash_texts(texts: Iterable[str]) -> str:
    """A hash of a list of sentences (their order and their boundaries included)."""
    return hashlib.sha256("\n".join(texts).encode("utf-8", "surrogatepass")).hexdigest()


def _options_for_key(cfg: TokenizerConfig) -> dict[str, Any]:
    return {"type": cfg.type, "vocab_size": cfg.vocab_size, "joint": cfg.joint,
            "character_coverage": cfg.character_coverage, "byte_fallback": cfg.byte_fallback}


def train_tokenizer(src_texts: Iterable[str], tgt_texts: Iterable[str], cfg: TokenizerConfig) -> Tokenizer:
    """Train SentencePiece in-process: one model on both sides if ``cfg.joint``, else one per side.

    The texts may be lazy, re-iterable collections (e.g. a sample of sentences on disk): they
    are read once per training attempt and never copied into a list here.
    """
    if cfg.joint:
        return Tokenizer(_train_model(lambda: itertools.chain(src_texts, tgt_texts), cfg, "joint"))
    return Tokenizer(_train_model(lambda: iter(src_texts), cfg, "source"),
                     _train_model(lambda: iter(tgt_texts), cfg, "target"))


def _train_model(texts: Callable[[], Iterator[str]], cfg: TokenizerConfig, side: str) -> bytes:
    """One serialized model from the sentences ``texts()`` yields. A vocab_size the text cannot fill
    (or too small for its characters) is adjusted."""
    if not any(text.strip() for text in texts()):
        raise DataError(f"no text to train the {side} tokenizer on")
    vocab_size = cfg.vocab_size
    for _ in range(3):
        try:
            return _run_trainer(texts, cfg, vocab_size)
        except RuntimeError as exc:
            adjusted = _adjusted_vocab_size(str(exc))
            if adjusted is None or adjusted == vocab_size:
                raise DataError(f"SentencePiece could not train the {side} tokenizer: {exc}") from exc
            logger.warning("tokenizer: tokenizer.vocab_size=%d does not fit the %s text (%s); using %d",
                           vocab_size, side, "too small for its characters" if adjusted > vocab_size
                           else "too few distinct pieces", adjusted)
            vocab_size = adjusted
    raise DataError(f"SentencePiece could not find a vocabulary size for the {side} tokenizer")


def _adjusted_vocab_size(message: str) -> int | None:
    """The size sentencepiece asks for in its error, or None when the error is about something else."""
    too_high = re.search(r"Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+)", message)
    if too_high:
        return int(too_high.group(1))
    too_small = re.search(r"Vocabulary size is smaller than required_chars\. \d+ vs (\d+)", message)
    if too_small:
        return int(too_small.group(1))
    return None


def _run_trainer(texts: Callable[[], Iterator[str]], cfg: TokenizerConfig, vocab_size: int) -> bytes:
    spm.set_random_generator_seed(TRAIN_SEED)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=(text for text in texts() if text.strip()), model_writer=model, model_type=cfg.type, vocab_size=vocab_size,
        character_coverage=cfg.character_coverage, byte_fallback=cfg.byte_fallback,
        pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
        pad_piece="<pad>", unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>",
        input_sentence_size=MAX_TRAIN_SENTENCES, shuffle_input_sentence=True,
        num_threads=encoding_threads(), minloglevel=2,  # sentencepiece logs every step to stderr otherwise
    )
    return model.getvalue()
