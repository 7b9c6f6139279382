"""SentencePiece subwords: the :class:`Tokenizer` that encodes and decodes, saves and loads itself.

The special ids live in :mod:`seq2seq.ids`; every model used here has them. Training and
caching models is :mod:`.tokenizer_training`'s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch

from ..errors import CheckpointError, DataError
from ..ids import BOS_ID, EOS_ID, PAD_ID, UNK_ID

STATE_FORMAT = "sentencepiece"
META_FILE = "tokenizer.json"

logger = logging.getLogger(__name__)


class Tokenizer:
    """One joint SentencePiece model, or one per language; ids exclude BOS/EOS unless added by the caller.

    A right-to-left tokenizer (``right_to_left``) gives the target's pieces last to first, so that a
    model trained through it writes its translations backwards (a reranker of n-best lists,
    :mod:`seq2seq.rescoring`); it decodes them back to ordinary text. Sources are never reversed.
    """

    def __init__(self, src_model: bytes, tgt_model: bytes | None = None, *, right_to_left: bool = False) -> None:
        """``src_model``/``tgt_model`` are serialized model protos; ``tgt_model=None`` means joint."""
        self._src_proto = src_model
        self._tgt_proto = tgt_model
        self._src = load_processor(src_model, "the source SentencePiece model")
        self._tgt = self._src if tgt_model is None else load_processor(tgt_model, "the target SentencePiece model")
        self.right_to_left = right_to_left

    def in_order(self, right_to_left: bool) -> Tokenizer:
        """This tokenizer giving the target's pieces in the given order (itself when it already does)."""
        if right_to_left == self.right_to_left:
            return self
        return Tokenizer(self._src_proto, self._tgt_proto, right_to_left=right_to_left)

    @property
    def target_order(self) -> str:
        """``left_to_right`` or ``right_to_left``: the order of the target pieces, as ``tokenizer.target_order``."""
        return "right_to_left" if self.right_to_left else "left_to_right"

    def _ordered(self, ids: list[int]) -> list[int]:
        return ids[::-1] if self.right_to_left else ids

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
        """Target piece ids of one sentence, no BOS/EOS (last piece first when right to left)."""
        return self._ordered(self._tgt.encode(text, out_type=int))

    def encode_src_batch(self, texts: list[str], num_threads: int | None = None) -> list[list[int]]:
        """``encode_src`` for many sentences at once (on ``num_threads`` sentencepiece threads; None = all cores)."""
        return self._src.encode(texts, out_type=int, num_threads=num_threads or encoding_threads())

    def encode_tgt_batch(self, texts: list[str], num_threads: int | None = None) -> list[list[int]]:
        """``encode_tgt`` for many sentences at once."""
        batch = self._tgt.encode(texts, out_type=int, num_threads=num_threads or encoding_threads())
        return [ids[::-1] for ids in batch] if self.right_to_left else batch

    def sample_src(self, text: str, alpha: float, nbest: int) -> list[int]:
        """One SentencePiece *sampled* segmentation of a source sentence (subword regularisation)."""
        return self._src.encode(text, out_type=int, enable_sampling=True, alpha=alpha, nbest_size=nbest)

    def sample_tgt(self, text: str, alpha: float, nbest: int) -> list[int]:
        """One sampled segmentation of a target sentence."""
        return self._ordered(self._tgt.encode(text, out_type=int, enable_sampling=True, alpha=alpha, nbest_size=nbest))

    def decode_src(self, ids: Sequence[int]) -> str:
        """Plain text of source ids; stops at EOS, skips PAD and BOS."""
        return self._src.decode(_content_ids(ids))

    def decode_tgt(self, ids: Sequence[int]) -> str:
        """Plain text of target ids (e.g. a search result); stops at EOS, skips PAD and BOS."""
        return self._tgt.decode(self._ordered(_content_ids(ids)))

    def decode_tgt_batch(self, batch: Sequence[Sequence[int]]) -> list[str]:
        """``decode_tgt`` for many sentences."""
        return self._tgt.decode([self._ordered(_content_ids(ids)) for ids in batch], num_threads=encoding_threads())

    def src_pieces(self, text: str) -> list[str]:
        """The source pieces of a sentence, as the encoder sees them (``▁`` marks a word start)."""
        return self._src.encode(text, out_type=str)

    def tgt_pieces(self, ids: Sequence[int]) -> list[str]:
        """The target piece of each id (special ids included, e.g. ``</s>``)."""
        return [self._tgt.id_to_piece(int(i)) for i in ids]

    def fingerprint(self) -> str:
        """A hash of the model(s) and the target order: equal fingerprints encode identically."""
        digest = hashlib.sha256(self._src_proto)
        if self._tgt_proto is not None:
            digest.update(self._tgt_proto)
        if self.right_to_left:  # left-to-right fingerprints stay those of the files alone, as before
            digest.update(b"right_to_left")
        return digest.hexdigest()[:16]

    def to_state(self) -> dict[str, Any]:
        """The model protos as uint8 tensors plus plain fields: loads with ``torch.load(weights_only=True)``."""
        state: dict[str, Any] = {"format": STATE_FORMAT, "joint": self.joint, "src_model": _to_tensor(self._src_proto)}
        if self._tgt_proto is not None:
            state["tgt_model"] = _to_tensor(self._tgt_proto)
        if self.right_to_left:
            state["right_to_left"] = True
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
        if not isinstance(state.get("right_to_left", False), bool):
            raise CheckpointError("the checkpoint's tokenizer entry right_to_left must be true or false")
        try:
            return cls(src, tgt, right_to_left=state.get("right_to_left", False))
        except DataError as exc:
            raise CheckpointError(f"the checkpoint's tokenizer cannot be loaded: {exc}") from exc

    @classmethod
    def load(cls, directory: str | Path) -> Tokenizer:
        """Read a directory written by :meth:`save`: ``src.model``, and ``tgt.model`` when not joint."""
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        tgt = None if meta["joint"] else (directory / "tgt.model").read_bytes()
        return cls((directory / "src.model").read_bytes(), tgt, right_to_left=meta.get("right_to_left", False))

    def save(self, directory: str | Path) -> None:
        """Write the model file(s), readable by the ``spm_encode`` tools as well, and a small JSON description."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "src.model").write_bytes(self._src_proto)
        if self._tgt_proto is not None:
            (directory / "tgt.model").write_bytes(self._tgt_proto)
        meta = {"joint": self.joint, "right_to_left": self.right_to_left,
                "src_vocab_size": self.src_vocab_size, "tgt_vocab_size": self.tgt_vocab_size,
                "special_ids": {"pad": PAD_ID, "unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID}}
        (directory / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")


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


def load_processor(proto: bytes, what: str) -> spm.SentencePieceProcessor:
    """A processor of the serialized model ``proto``; DataError naming ``what`` when it does not load or its
    special ids are not this package's."""
    processor = spm.SentencePieceProcessor()
    try:
        processor.LoadFromSerializedProto(proto)
    except (RuntimeError, OSError) as exc:
        raise DataError(f"{what} is not a readable SentencePiece model: {exc}") from exc
    ids = (processor.pad_id(), processor.unk_id(), processor.bos_id(), processor.eos_id())
    if ids != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
        raise DataError(f"{what}: the model has special ids pad/unk/bos/eos = {ids}, this package needs "
                        f"{PAD_ID}/{UNK_ID}/{BOS_ID}/{EOS_ID}")
    return processor


def _to_tensor(proto: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(proto), dtype=torch.uint8)


def _from_tensor(value: Any) -> bytes:
    if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8:
        raise CheckpointError("the checkpoint's tokenizer model must be a uint8 tensor")
    return value.cpu().numpy().tobytes()


def encoding_threads() -> int:
    """Threads SentencePiece uses to encode or train: every core, at most 8."""
    return min(os.cpu_count() or 1, 8)
