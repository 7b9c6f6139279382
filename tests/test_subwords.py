"""tokenizer.model (a given SentencePiece model) and tokenizer.sampling_alpha (subword regularisation in training)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import sentencepiece as spm
import torch

from seq2seq.config import Config, config_from_dict, replace_config
from seq2seq.data import EncodedCorpus, prepare
from seq2seq.data.subwords import SubwordSampler
from seq2seq.errors import DataError
from seq2seq.training import train

from digits import write_digit_pairs  # tests/digits.py


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


def digits_config(tmp_path: Path, **sections: dict[str, Any]) -> Config:
    train_pairs = write_digit_pairs(tmp_path / "train.tsv", count=60, seed=1)
    dev_pairs = write_digit_pairs(tmp_path / "dev.tsv", count=10, seed=2)
    return config_from_dict({
        "data": {"format": "tsv", "train": str(train_pairs), "dev": str(dev_pairs),
                 "cache_dir": str(tmp_path / "cache")},
        "tokenizer": {"vocab_size": 300, **sections.get("tokenizer", {})},  # 256 byte pieces, then merges
        "model": {"embedding_size": 8, "hidden_size": 8, "num_layers": 1, "decoder_hidden_size": 16},
        "train": {"device": "cpu", "batch_size": 80, "scheduler": "constant", "max_steps": 6, "validate_every": 3,
                  "log_every": 1, "patience": 0, "amp": "off", **sections.get("train", {})}})


def test_a_given_sentencepiece_model_is_used_instead_of_training_one(small_tokenizer, tmp_path: Path) -> None:
    small_tokenizer.save(tmp_path / "spm")
    cfg = digits_config(tmp_path, tokenizer={"model": str(tmp_path / "spm" / "src.model")})
    assert prepare(cfg, verbose=False).tokenizer.fingerprint() == small_tokenizer.fingerprint()
    per_side = digits_config(tmp_path, tokenizer={"src_model": str(tmp_path / "spm" / "src.model"),
                                                  "tgt_model": str(tmp_path / "spm" / "src.model")})
    tokenizer = prepare(per_side, verbose=False).tokenizer
    assert not tokenizer.joint and tokenizer.tgt_vocab_size == small_tokenizer.tgt_vocab_size


def test_a_given_model_with_other_special_ids_is_refused_naming_the_file(tmp_path: Path) -> None:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(["eins zwei drei vier"] * 20), model_writer=model,
                                   vocab_size=15, minloglevel=2)  # sentencepiece's defaults: unk 0, bos 1, eos 2
    path = tmp_path / "default-ids.model"
    path.write_bytes(model.getvalue())
    with pytest.raises(DataError, match=r"tokenizer\.model = .*default-ids\.model: the model has special ids .*--pad_id=0"):
        prepare(digits_config(tmp_path, tokenizer={"model": str(path)}), verbose=False)
    with pytest.raises(DataError, match=r"tokenizer\.model: .*not found: .*missing\.model"):
        prepare(digits_config(tmp_path, tokenizer={"model": str(tmp_path / "missing.model")}), verbose=False)


def test_subword_sampling_resegments_training_text_repeatably(tmp_path: Path) -> None:
    data = prepare(digits_config(tmp_path), verbose=False)
    sampler = SubwordSampler(data.tokenizer, data.train, alpha=0.5, nbest=-1, max_length=100, seed=1)
    rows = list(range(len(data.train)))
    sampler.reseed(3)
    src_ids, tgt_ids = sampler(rows)
    assert src_ids != [data.train.src_ids[i] for i in rows]
    assert [data.tokenizer.decode_tgt(ids) for ids in tgt_ids] == [data.train.tgt_text[i] for i in rows]
    sampler.reseed(3)
    assert sampler(rows) == (src_ids, tgt_ids)


def test_subword_sampling_changes_training_batches_and_not_dev_ones(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[EncodedCorpus, bool]] = []
    real_collate = EncodedCorpus.collate

    def recording_collate(self: EncodedCorpus, indices: Any, resegment: Any = None) -> Any:
        batch = real_collate(self, indices, resegment)
        calls.append((self, resegment is not None, batch, real_collate(self, indices)))
        return batch

    monkeypatch.setattr(EncodedCorpus, "collate", recording_collate)
    train(digits_config(tmp_path, tokenizer={"sampling_alpha": 0.5}), tmp_path / "run")
    sampled = [call for call in calls if call[1]]
    train_corpus = sampled[0][0]
    assert all(corpus is train_corpus for corpus, *_ in sampled)
    assert any(not torch.equal(batch.src_ids, plain.src_ids) for _, _, batch, plain in sampled)
    dev_calls = [call for call in calls if call[0] is not train_corpus]
    assert dev_calls and not any(resegmented for _, resegmented, _, _ in dev_calls)


def test_a_run_with_subword_sampling_resumes_exactly(tmp_path: Path) -> None:
    cfg = digits_config(tmp_path, tokenizer={"sampling_alpha": 0.5})
    full = train(cfg, tmp_path / "full")
    train(replace_config(cfg, "train", max_steps=3), tmp_path / "split")
    resumed = train(cfg, tmp_path / "split", resume=True)
    assert resumed.losses == {step: loss for step, loss in full.losses.items() if step > 3}
    plain = train(digits_config(tmp_path), tmp_path / "plain")
    assert plain.losses != full.losses
