"""SentencePiece: fixed special ids, lossless round trips, byte fallback, checkpoint state, and the cache."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
import torch

from seq2seq.data import tokenizer_training as tokenizer_module
from seq2seq.config import TokenizerConfig
from seq2seq.errors import CheckpointError
from seq2seq.data.tokenizer import Tokenizer
from seq2seq.data.tokenizer_training import load_or_train_tokenizer, tokenizer_key, train_tokenizer
from seq2seq.ids import BOS_ID, EOS_ID, PAD_ID, UNK_ID

UNSEEN = "Ça coûte 3 € — 東京 🙂 naïve"


def _sides(pairs: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    src, tgt = zip(*pairs)
    return list(src), list(tgt)


def test_special_ids_are_fixed(small_tokenizer: Tokenizer) -> None:
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    assert small_tokenizer.tgt_pieces([PAD_ID, UNK_ID, BOS_ID, EOS_ID]) == ["<pad>", "<unk>", "<s>", "</s>"]


def test_encoding_adds_no_special_ids(small_tokenizer: Tokenizer, small_pairs: list[tuple[str, str]]) -> None:
    for src, tgt in small_pairs:
        ids = small_tokenizer.encode_src(src) + small_tokenizer.encode_tgt(tgt)
        assert ids and not {PAD_ID, UNK_ID, BOS_ID, EOS_ID} & set(ids)


def test_round_trip_of_training_sentences(small_tokenizer: Tokenizer, small_pairs: list[tuple[str, str]]) -> None:
    for src, tgt in small_pairs:
        assert small_tokenizer.decode_src(small_tokenizer.encode_src(src)) == src
        assert small_tokenizer.decode_tgt(small_tokenizer.encode_tgt(tgt)) == tgt


def test_unseen_characters_round_trip_through_byte_pieces(small_tokenizer: Tokenizer) -> None:
    ids = small_tokenizer.encode_tgt(UNSEEN)
    assert UNK_ID not in ids
    assert small_tokenizer.decode_tgt(ids) == UNSEEN
    assert any(piece.startswith("<0x") for piece in small_tokenizer.tgt_pieces(ids))


def test_without_byte_fallback_unseen_characters_become_unk(small_pairs: list[tuple[str, str]]) -> None:
    tokenizer = train_tokenizer(*_sides(small_pairs), TokenizerConfig(vocab_size=100, byte_fallback=False))
    assert UNK_ID in tokenizer.encode_tgt("東京")


def test_decoding_stops_at_eos_and_skips_pad_and_bos(small_tokenizer: Tokenizer) -> None:
    ids = small_tokenizer.encode_tgt("a dog runs .")
    other = small_tokenizer.encode_tgt("the cat")
    assert small_tokenizer.decode_tgt([BOS_ID, *ids, EOS_ID, *other, PAD_ID]) == "a dog runs ."
    assert small_tokenizer.decode_tgt([*ids, PAD_ID, PAD_ID]) == "a dog runs ."
    assert small_tokenizer.decode_tgt(torch.tensor([*ids, EOS_ID])) == "a dog runs ."
    assert small_tokenizer.decode_tgt_batch([[*ids, EOS_ID], other]) == ["a dog runs .", "the cat"]


def test_batch_encoding_equals_one_by_one(small_tokenizer: Tokenizer, small_pairs: list[tuple[str, str]]) -> None:
    src, tgt = _sides(small_pairs)
    assert small_tokenizer.encode_src_batch(src) == [small_tokenizer.encode_src(s) for s in src]
    assert small_tokenizer.encode_tgt_batch(tgt) == [small_tokenizer.encode_tgt(t) for t in tgt]


def test_pieces_match_ids(small_tokenizer: Tokenizer) -> None:
    pieces = small_tokenizer.src_pieces("ein Hund läuft")
    assert "".join(pieces).replace("▁", " ").strip() == "ein Hund läuft"
    assert small_tokenizer.tgt_pieces(small_tokenizer.encode_tgt("ein Hund läuft")) == pieces  # joint model


def test_state_survives_a_weights_only_checkpoint(small_tokenizer: Tokenizer) -> None:
    state = small_tokenizer.to_state()
    assert state["src_model"].dtype == torch.uint8
    buffer = io.BytesIO()
    torch.save({"tokenizer": state}, buffer)
    buffer.seek(0)
    restored = Tokenizer.from_state(torch.load(buffer, weights_only=True)["tokenizer"])
    assert restored.joint and restored.src_vocab_size == small_tokenizer.src_vocab_size
    assert restored.encode_tgt(UNSEEN) == small_tokenizer.encode_tgt(UNSEEN)
    assert restored.fingerprint() == small_tokenizer.fingerprint()


def test_separate_models_have_their_own_vocabularies(small_pairs: list[tuple[str, str]]) -> None:
    src, tgt = _sides(small_pairs)
    tokenizer = train_tokenizer(src, tgt, TokenizerConfig(type="unigram", vocab_size=300, joint=False))
    assert not tokenizer.joint
    assert tokenizer.decode_src(tokenizer.encode_src(src[0])) == src[0]
    assert tokenizer.decode_tgt(tokenizer.encode_tgt(tgt[0])) == tgt[0]
    assert tokenizer.src_pieces("Hund") != tokenizer.tgt_pieces(tokenizer.encode_tgt("Hund"))  # different models
    restored = Tokenizer.from_state(tokenizer.to_state())
    assert not restored.joint
    assert restored.encode_src(src[1]) == tokenizer.encode_src(src[1])
    assert restored.encode_tgt(tgt[1]) == tokenizer.encode_tgt(tgt[1])


def test_damaged_state_is_a_checkpoint_error(small_tokenizer: Tokenizer) -> None:
    with pytest.raises(CheckpointError, match="not a sentencepiece tokenizer state"):
        Tokenizer.from_state({"format": "bpe"})
    state = small_tokenizer.to_state()
    state["src_model"] = state["src_model"][:100]
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        Tokenizer.from_state(state)


def test_too_large_vocab_size_falls_back_with_a_warning(small_pairs: list[tuple[str, str]],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="seq2seq.data.tokenizer_training"):
        tokenizer = train_tokenizer(*_sides(small_pairs), TokenizerConfig(vocab_size=8000))
    assert 260 < tokenizer.src_vocab_size < 8000
    assert f"tokenizer.vocab_size=8000 does not fit the joint text (too few distinct pieces); " \
           f"using {tokenizer.src_vocab_size}" in caplog.text


def test_too_small_vocab_size_grows_to_the_characters_and_bytes(small_pairs: list[tuple[str, str]],
                                                                caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="seq2seq.data.tokenizer_training"):
        tokenizer = train_tokenizer(*_sides(small_pairs), TokenizerConfig(vocab_size=16))
    assert tokenizer.src_vocab_size > 256 + 4  # every byte piece and the specials
    assert "too small for its characters" in caplog.text


def test_second_call_loads_from_the_cache_without_training(small_pairs: list[tuple[str, str]], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    src, tgt = _sides(small_pairs)
    cfg = TokenizerConfig(vocab_size=300)
    first = load_or_train_tokenizer(src, tgt, cfg, tmp_path)
    model_file = tmp_path / "tokenizer" / tokenizer_key(src, tgt, cfg) / "src.model"
    mtime = model_file.stat().st_mtime_ns

    def no_training(*args: object) -> bytes:
        raise AssertionError("the tokenizer was retrained instead of loaded from the cache")

    monkeypatch.setattr(tokenizer_module, "_train_model", no_training)
    second = load_or_train_tokenizer(src, tgt, cfg, tmp_path)
    assert second.fingerprint() == first.fingerprint()
    assert model_file.stat().st_mtime_ns == mtime
    with pytest.raises(AssertionError, match="retrained"):  # other options or other text: a new model
        load_or_train_tokenizer(src, tgt, TokenizerConfig(vocab_size=301), tmp_path)
    with pytest.raises(AssertionError, match="retrained"):
        load_or_train_tokenizer(src[:-1], tgt[:-1], cfg, tmp_path)


def test_cache_key_depends_on_text_and_options(small_pairs: list[tuple[str, str]]) -> None:
    src, tgt = _sides(small_pairs)
    key = tokenizer_key(src, tgt, TokenizerConfig())
    assert key == tokenizer_key(list(src), list(tgt), TokenizerConfig())
    assert key != tokenizer_key(tgt, src, TokenizerConfig())
    assert key != tokenizer_key(src, tgt, TokenizerConfig(type="unigram"))
    assert key != tokenizer_key(src, tgt, TokenizerConfig(byte_fallback=False))
    # Sentence boundaries count: joining two lines is other text.
    assert key != tokenizer_key([src[0] + src[1], *src[2:]], tgt, TokenizerConfig())


def test_interrupted_caching_leaves_no_directory(small_pairs: list[tuple[str, str]], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(self: Tokenizer, directory: Path) -> None:
        (Path(directory) / "src.model").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Tokenizer, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        load_or_train_tokenizer(*_sides(small_pairs), TokenizerConfig(vocab_size=300), tmp_path)
    assert list((tmp_path / "tokenizer").iterdir()) == []
