"""SentencePiece subwords: training in-process, caching, encoding and decoding.

The special ids live in :mod:`seq2seq.ids`; every model trained here uses them.

Models are trained from the training corpus (a corpus of more than
:data:`MAX_TRAIN_SENTENCES` sentences is sampled by ``prepare``) and cached on disk
under a hash of the text and the options, so running ``prepare`` or ``train`` again
does not retrain. A damaged cached model is reported and trained again.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch

from ..config import TokenizerConfig
from ..errors import CheckpointError, DataError
from ..ids import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from .cache import install_entry, scratch_directory, verify_entry, warn_damaged, write_manifest

STATE_FORMAT = "sentencepiece"
META_FILE = "tokenizer.json"
TRAIN_SEED = 1  # sentencepiece samples and shuffles its input with this seed: same data, same model
MAX_TRAIN_SENTENCES = 2_000_000  # larger corpora are sampled (per model) to bound memory and time

logger = logging.getLogger(__name__)


class Tokenizer:
    """One joint SentencePiece model, or one per language; ids exclude BOS/EOS unless added by the caller."""

    def __init__(self, src_model: bytes, tgt_model: bytes | None = None) -> None:
        """``src_model``/``tgt_model`` are serialized model protos; ``tgt_model=None`` means joint."""
        self._src_proto = src_model
        self._tgt_proto = tgt_model
        self._src = _load_processor(src_model, "source")
        self._tgt = self._src if tgt_model is None else _load_processor(tgt_model, "target")

    @property
    def joint(self) -> bool:
        """True when source and target share one model (one vocabulary, same ids)."""
        return self._tgt_proto is None

    @property
    def src_vocab_size(self) -> int:
        return self._src.get_piece_size()

    @property
    def tgt_vocab_size(self) -> int:
        return self._tgt.get_piece_size()

    def encode_src(self, text: str) -> list[int]:
        """Source piece ids of one sentence, no BOS/EOS."""
        return self._src.encode(text, out_type=int)

    def encode_tgt(self, text: str) -> list[int]:
        """Target piece ids of one sentence, no BOS/EOS."""
        return self._tgt.encode(text, out_type=int)

    def encode_src_batch(self, texts: list[str], num_threads: int | None = None) -> list[list[int]]:
        """``encode_src`` for many sentences at once (on ``num_threads`` sentencepiece threads; None = all cores)."""
        return self._src.encode(texts, out_type=int, num_threads=num_threads or _num_threads())

    def encode_tgt_batch(self, texts: list[str], num_threads: int | None = None) -> list[list[int]]:
        """``encode_tgt`` for many sentences at once."""
        return self._tgt.encode(texts, out_type=int, num_threads=num_threads or _num_threads())

    def sample_src(self, text: str, alpha: float, nbest: int) -> list[int]:
        """One SentencePiece *sampled* segmentation of a source sentence (subword regularisation)."""
        return self._src.encode(text, out_type=int, enable_sampling=True, alpha=alpha, nbest_size=nbest)

    def sample_tgt(self, text: str, alpha: float, nbest: int) -> list[int]:
        """One sampled segmentation of a target sentence."""
        return self._tgt.encode(text, out_type=int, enable_sampling=True, alpha=alpha, nbest_size=nbest)

    def decode_src(self, ids: Sequence[int]) -> str:
        """Plain text of source ids; stops at EOS, skips PAD and BOS."""
        return self._src.decode(_content_ids(ids))

    def decode_tgt(self, ids: Sequence[int]) -> str:
        """Plain text of target ids (e.g. a search result); stops at EOS, skips PAD and BOS."""
        return self._tgt.decode(_content_ids(ids))

    def decode_tgt_batch(self, batch: Sequence[Sequence[int]]) -> list[str]:
        """``decode_tgt`` for many sentences."""
        return self._tgt.decode([_content_ids(ids) for ids in batch], num_threads=_num_threads())

    def src_pieces(self, text: str) -> list[str]:
        """The source pieces of a sentence, as the encoder sees them (``▁`` marks a word start)."""
        return self._src.encode(text, out_type=str)

    def tgt_pieces(self, ids: Sequence[int]) -> list[str]:
        """The target piece of each id (special ids included, e.g. ``</s>``)."""
        return [self._tgt.id_to_piece(int(i)) for i in ids]

    def fingerprint(self) -> str:
        """A hash of the model(s): equal fingerprints encode identically."""
        digest = hashlib.sha256(self._src_proto)
        if self._tgt_proto is not None:
            digest.update(self._tgt_proto)
        return digest.hexdigest()[:16]

    def to_state(self) -> dict[str, Any]:
        """The model protos as uint8 tensors plus plain fields: loads with ``torch.load(weights_only=True)``."""
        state: dict[str, Any] = {"format": STATE_FORMAT, "joint": self.joint, "src_model": _to_tensor(self._src_proto)}
        if self._tgt_proto is not None:
            state["tgt_model"] = _to_tensor(self._tgt_proto)
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Tokenizer:
        """Rebuild a tokenizer from :meth:`to_state`; a damaged state raises CheckpointError."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or "src_model" not in state:
            raise CheckpointError("the checkpoint's tokenizer entry is not a sentencepiece tokenizer state")
        if not state.get("joint", True) and "tgt_model" not in state:
            raise CheckpointError("the checkpoint's tokenizer is not joint but holds no target model")
        src = _from_tensor(state["src_model"])
        tgt = None if state.get("joint", True) else _from_tensor(state["tgt_model"])
        try:
            return cls(src, tgt)
        except DataError as exc:
            raise CheckpointError(f"the checkpoint's tokenizer cannot be loaded: {exc}") from exc

    @classmethod
    def load(cls, directory: str | Path) -> Tokenizer:
        """Read a directory written by :meth:`save`: ``src.model``, and ``tgt.model`` when not joint."""
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        tgt = None if meta["joint"] else (directory / "tgt.model").read_bytes()
        return cls((directory / "src.model").read_bytes(), tgt)

    def save(self, directory: str | Path) -> None:
        """Write the model file(s), readable by the ``spm_encode`` tools as well, and a small JSON description."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "src.model").write_bytes(self._src_proto)
        if self._tgt_proto is not None:
            (directory / "tgt.model").write_bytes(self._tgt_proto)
        meta = {"joint": self.joint, "src_vocab_size": self.src_vocab_size, "tgt_vocab_size": self.tgt_vocab_size,
                "special_ids": {"pad": PAD_ID, "unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID}}
        (directory / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")


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
        num_threads=_num_threads(), minloglevel=2,  # sentencepiece logs every step to stderr otherwise
    )
    return model.getvalue()


def _content_ids(ids: Sequence[int]) -> list[int]:
    """The ids before the first EOS, without PAD and BOS (what decoding turns into text)."""
    content = []
    for token in ids:
        token = int(token)
        if token == EOS_ID:
            break
        if token not in (PAD_ID, BOS_ID):
            content.append(token)
    return content


def _load_processor(proto: bytes, side: str) -> spm.SentencePieceProcessor:
    processor = spm.SentencePieceProcessor()
    try:
        processor.LoadFromSerializedProto(proto)
    except (RuntimeError, OSError) as exc:
        raise DataError(f"the {side} SentencePiece model is not readable: {exc}") from exc
    ids = (processor.pad_id(), processor.unk_id(), processor.bos_id(), processor.eos_id())
    if ids != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
        raise DataError(f"the {side} SentencePiece model has special ids pad/unk/bos/eos = {ids}; "
                        f"this package needs {PAD_ID}/{UNK_ID}/{BOS_ID}/{EOS_ID}")
    return processor


def _to_tensor(proto: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(proto), dtype=torch.uint8)


def _from_tensor(value: Any) -> bytes:
    if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8:
        raise CheckpointError("the checkpoint's tokenizer model must be a uint8 tensor")
    return value.cpu().numpy().tobytes()


def _num_threads() -> int:
    return min(os.cpu_count() or 1, 8)
