"""prepare(): cleaning, reporting, caching; EncodedCorpus: bucketed batches and collated tensors."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from seq2seq.data import preparation as data_module
from seq2seq.cli import main
from seq2seq.config import Config, load_config
from seq2seq.data import EncodedCorpus, prepare
from seq2seq.data.batches import padding_ratio
from seq2seq.errors import DataError
from seq2seq.ids import BOS_ID, EOS_ID, PAD_ID

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _random_corpus(n: int = 500, seed: int = 0) -> EncodedCorpus:
    rng = np.random.default_rng(seed)
    src = [rng.integers(4, 50, size=rng.integers(1, 30)).tolist() for _ in range(n)]
    tgt = [rng.integers(4, 50, size=rng.integers(1, 30)).tolist() for _ in range(n)]
    return EncodedCorpus.from_ids(src, tgt)


def _text_config(tmp_path: Path, pairs: list[tuple[str, str]], *overrides: str, dev: list[tuple[str, str]] = (),
                 gz: bool = False) -> Config:
    """Write train (and dev) as PREFIX.de / PREFIX.en under tmp_path and return a config reading them."""
    for name, split_pairs in (("train", pairs), ("dev", dev)):
        for lang, lines in (("de", [s for s, _ in split_pairs]), ("en", [t for _, t in split_pairs])):
            data = "".join(line + "\n" for line in lines).encode("utf-8")
            path = tmp_path / f"{name}.{lang}{'.gz' if gz else ''}"
            path.write_bytes(gzip.compress(data) if gz else data)
    settings = [f"data.train={tmp_path / 'train'}", "data.format=text", f"data.cache_dir={tmp_path / 'cache'}",
                "tokenizer.vocab_size=300", "train.batch_size=200"]
    if dev:
        settings.append(f"data.dev={tmp_path / 'dev'}")
    return load_config(None, [*settings, *overrides])


def _cache_entries(cfg: Config) -> list[Path]:
    data_dir = Path(cfg.data.cache_dir) / "data"
    return sorted(data_dir.iterdir()) if data_dir.exists() else []


# ---- batching -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("by", ["tokens", "sentences"])
def test_an_epoch_covers_every_pair_exactly_once(by: str) -> None:
    corpus = _random_corpus()
    batches = corpus.batch_order(300 if by == "tokens" else 16, by=by, seed=1, epoch=0)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(corpus)))


def test_token_limit_counts_padding_and_holds() -> None:
    corpus = _random_corpus()
    for max_tokens in (64, 300, 1000):
        for batch in corpus.batch_order(max_tokens, seed=3, epoch=2):
            longest = max(corpus.src_lengths[batch].max(), corpus.tgt_lengths[batch].max() + 1)
            assert len(batch) * longest <= max_tokens


def test_a_pair_longer_than_the_limit_gets_its_own_batch() -> None:
    corpus = EncodedCorpus.from_ids([[5] * 3, [5] * 40, [5] * 3], [[6] * 3, [6] * 2, [6] * 3])
    batches = corpus.batch_order(20, seed=0)
    assert [1] in batches
    assert sorted(i for b in batches for i in b) == [0, 1, 2]


def test_sentence_batches_hold_the_requested_number_of_pairs() -> None:
    batches = _random_corpus(100).batch_order(16, by="sentences", seed=0)
    assert sorted(len(b) for b in batches) == [4] + [16] * 6


def test_same_seed_and_epoch_give_the_same_order_and_another_epoch_a_different_one() -> None:
    corpus = _random_corpus()
    first = corpus.batch_order(300, seed=7, epoch=1)
    assert corpus.batch_order(300, seed=7, epoch=1) == first
    assert _random_corpus().batch_order(300, seed=7, epoch=1) == first  # a rebuilt corpus too
    assert corpus.batch_order(300, seed=7, epoch=2) != first
    assert corpus.batch_order(300, seed=8, epoch=1) != first


def test_without_shuffle_batches_follow_length_order() -> None:
    corpus = _random_corpus()
    batches = corpus.batch_order(300, shuffle=False)
    assert batches == corpus.batch_order(300, shuffle=False, seed=5, epoch=9)
    firsts = [corpus.src_lengths[b[0]] for b in batches]
    assert firsts == sorted(firsts)


def test_bucketing_keeps_padding_low() -> None:
    corpus = _random_corpus(3000)
    bucketed = corpus.batch_order(1000, seed=0)
    rng = np.random.default_rng(0)
    unsorted = [b.tolist() for b in np.array_split(rng.permutation(len(corpus)), len(bucketed))]
    assert padding_ratio(corpus, bucketed) < 0.5 * padding_ratio(corpus, unsorted)


def test_bad_batching_arguments_raise() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        _random_corpus().batch_order(0)
    with pytest.raises(ValueError, match="by must be"):
        _random_corpus().batch_order(10, by="words")


# ---- collate ---------------------------------------------------------------------------------------------


def test_collate_pads_and_places_bos_and_eos() -> None:
    src = [[10, 11, 12], [13], [14, 15]]
    tgt = [[20], [21, 22, 23], [24, 25]]
    batch = EncodedCorpus.from_ids(src, tgt).collate([1, 0, 2])
    assert batch.indices == [1, 0, 2]
    assert batch.src_ids.tolist() == [[13, PAD_ID, PAD_ID], [10, 11, 12], [14, 15, PAD_ID]]
    assert batch.src_lengths.tolist() == [1, 3, 2]
    assert batch.tgt_in_ids.tolist() == [[BOS_ID, 21, 22, 23], [BOS_ID, 20, PAD_ID, PAD_ID], [BOS_ID, 24, 25, PAD_ID]]
    assert batch.tgt_out_ids.tolist() == [[21, 22, 23, EOS_ID], [20, EOS_ID, PAD_ID, PAD_ID], [24, 25, EOS_ID, PAD_ID]]
    assert batch.tgt_lengths.tolist() == [4, 2, 3]
    assert batch.num_tgt_tokens == 9 == int((batch.tgt_out_ids != PAD_ID).sum())
    for tensor in (batch.src_ids, batch.src_lengths, batch.tgt_in_ids, batch.tgt_out_ids, batch.tgt_lengths):
        assert tensor.dtype == torch.int64


def test_collate_agrees_with_the_id_lists_on_random_batches() -> None:
    corpus = _random_corpus()
    for indices in corpus.batch_order(400, seed=2)[:10]:
        batch = corpus.collate(indices)
        for row, index in enumerate(indices):
            n, m = len(corpus.src_ids[index]), len(corpus.tgt_ids[index])
            assert batch.src_ids[row, :n].tolist() == corpus.src_ids[index]
            assert (batch.src_ids[row, n:] == PAD_ID).all()
            assert batch.tgt_out_ids[row, : m + 1].tolist() == corpus.tgt_ids[index] + [EOS_ID]
            assert batch.tgt_in_ids[row, : m + 1].tolist() == [BOS_ID] + corpus.tgt_ids[index]
        assert batch.src_ids.shape[1] == int(batch.src_lengths.max())


def test_batch_to_keeps_src_lengths_on_the_cpu() -> None:
    # "meta" stands in for an accelerator: a device other than the CPU that every machine has.
    batch = _random_corpus(20).collate(list(range(20)))
    moved = batch.to("meta", non_blocking=True)
    for name in ("src_ids", "tgt_in_ids", "tgt_out_ids", "tgt_lengths"):
        tensor, original = getattr(moved, name), getattr(batch, name)
        assert tensor.device.type == "meta", name
        assert (tensor.shape, tensor.dtype) == (original.shape, original.dtype), name
    # pack_padded_sequence reads the lengths on the CPU: moving them would cost a device sync per batch.
    assert moved.src_lengths.device.type == "cpu"
    assert torch.equal(moved.src_lengths, batch.src_lengths)
    assert moved.indices == batch.indices and moved.num_tgt_tokens == batch.num_tgt_tokens
    assert len(moved) == 20


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_pin_memory_pins_the_id_tensors() -> None:
    pinned = _random_corpus(20).collate(list(range(20))).pin_memory()
    assert pinned.src_ids.is_pinned() and pinned.tgt_out_ids.is_pinned()


# ---- prepare on the tiny synthetic config ----------------------------------------------------------------


def test_tiny_prepare_yields_aligned_splits(tiny_data, tiny_config) -> None:
    assert len(tiny_data.train) == tiny_config.data.synthetic_train_size
    assert len(tiny_data.dev) == tiny_config.data.synthetic_dev_size
    assert len(tiny_data.test) == tiny_config.data.synthetic_test_size
    tokenizer = tiny_data.tokenizer
    for corpus in (tiny_data.train, tiny_data.dev):
        for i in (0, len(corpus) // 2, len(corpus) - 1):
            assert tokenizer.decode_src(corpus.src_ids[i]) == corpus.src_text[i]
            assert tokenizer.decode_tgt(corpus.tgt_ids[i]) == corpus.tgt_text[i]


def test_cached_prepare_neither_retrains_nor_reencodes(tiny_data, tiny_config,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> None:
        raise AssertionError("prepare did work the cache should have saved")

    monkeypatch.setattr(data_module, "encode_splits", fail)
    monkeypatch.setattr("seq2seq.data.tokenizer_training._train_model", fail)
    again = prepare(tiny_config, verbose=False)
    assert again.train.src_ids == tiny_data.train.src_ids
    assert again.test.tgt_text == tiny_data.test.tgt_text
    assert again.tokenizer.fingerprint() == tiny_data.tokenizer.fingerprint()


def test_prepare_prints_statistics(tiny_config, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="seq2seq.data.preparation"):
        prepare(tiny_config)
    assert f"train: {tiny_config.data.synthetic_train_size} pairs kept of" in caplog.text
    assert "length p50" in caplog.text
    assert f"train batches at {tiny_config.train.batch_size} tokens" in caplog.text and "padding" in caplog.text


# ---- prepare on bad or dirty text files ------------------------------------------------------------------


def test_empty_lines_are_dropped_with_a_count(tmp_path: Path, small_pairs, caplog: pytest.LogCaptureFixture) -> None:
    pairs = [*small_pairs[:8], ("", "an orphan target"), ("   ", "   "), *small_pairs[8:], ("verwaist", "")]
    cfg = _text_config(tmp_path, pairs)
    with caplog.at_level(logging.WARNING, logger="seq2seq.data.preparation"):
        prepared = prepare(cfg, verbose=False)
    assert len(prepared.train) == len(small_pairs)
    assert prepared.train.report.dropped_empty == 3
    assert "train: dropped 3 of 23 pairs with an empty side" in caplog.text
    assert "" not in prepared.train.src_text and "" not in prepared.train.tgt_text


def test_long_pairs_are_dropped_from_train_and_truncated_in_dev(tmp_path: Path, small_pairs,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    long_pair = (" ".join(["Hund"] * 60), " ".join(["dog"] * 60))
    cfg = _text_config(tmp_path, [*small_pairs, long_pair], "data.max_length=50",
                       dev=[small_pairs[0], long_pair], gz=True)
    with caplog.at_level(logging.WARNING, logger="seq2seq.data.preparation"):
        prepared = prepare(cfg, verbose=False)
    assert len(prepared.train) == len(small_pairs)
    assert all(len(ids) <= 50 for ids in prepared.train.src_ids + prepared.train.tgt_ids)
    assert "train: dropped 1 of 21 pairs longer than data.max_length=50 subwords" in caplog.text
    assert len(prepared.dev) == 2  # BLEU needs every reference
    assert prepared.dev.tgt_text[1] == long_pair[1]
    assert len(prepared.dev.src_ids[1]) == 50
    assert "dev: truncated 1 of 2 sources to data.max_length=50" in caplog.text


def test_mismatched_files_fail_and_leave_no_cache(tmp_path: Path, small_pairs) -> None:
    cfg = _text_config(tmp_path, small_pairs)
    (tmp_path / "train.en").write_text("".join(t + "\n" for _, t in small_pairs[:-2]), encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.de has 20 lines but .*train\.en has 18"):
        prepare(cfg, verbose=False)
    assert not (tmp_path / "cache").exists()


def test_invalid_utf8_fails_naming_file_and_line(tmp_path: Path, small_pairs) -> None:
    cfg = _text_config(tmp_path, small_pairs)
    lines = [t.encode() for _, t in small_pairs]
    lines[4] = b"caf\xe9 au lait"
    (tmp_path / "train.en").write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataError, match=r"train\.en, line 5: invalid UTF-8"):
        prepare(cfg, verbose=False)
    assert not (tmp_path / "cache").exists()


def test_missing_dev_file_names_its_path(tmp_path: Path, small_pairs) -> None:
    cfg = _text_config(tmp_path, small_pairs, f"data.dev={tmp_path / 'nowhere' / 'dev'}")
    with pytest.raises(DataError, match=r"file not found: .*nowhere/dev\.de"):
        prepare(cfg, verbose=False)


def test_empty_corpus_is_an_error(tmp_path: Path) -> None:
    cfg = _text_config(tmp_path, [("", ""), (" ", "")])
    with pytest.raises(DataError, match=r"empty corpus: train data .*train\.de / .*train\.en has no pair"):
        prepare(cfg, verbose=False)


def test_train_entirely_over_max_length_is_an_error(tmp_path: Path, small_pairs) -> None:
    cfg = _text_config(tmp_path, small_pairs, "data.max_length=1")
    with pytest.raises(DataError, match=r"empty corpus: no train pair .* data\.max_length=1"):
        prepare(cfg, verbose=False)
    assert _cache_entries(cfg) == []


def test_interrupted_encoding_leaves_no_partial_cache(tmp_path: Path, small_pairs,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _text_config(tmp_path, small_pairs)
    real_save = data_module.write_manifest

    def crash_after_writing(directory: Path) -> None:
        real_save(directory)
        raise KeyboardInterrupt

    monkeypatch.setattr(data_module, "write_manifest", crash_after_writing)
    with pytest.raises(KeyboardInterrupt):
        prepare(cfg, verbose=False)
    assert _cache_entries(cfg) == []
    monkeypatch.setattr(data_module, "write_manifest", real_save)
    assert len(prepare(cfg, verbose=False).train) == len(small_pairs)
    assert len(_cache_entries(cfg)) == 1


def test_changed_data_gets_a_new_cache_entry(tmp_path: Path, small_pairs) -> None:
    cfg = _text_config(tmp_path, small_pairs)
    prepare(cfg, verbose=False)
    prepare(_text_config(tmp_path, small_pairs, "data.max_length=50"), verbose=False)
    changed = _text_config(tmp_path, small_pairs[:-1])
    assert len(prepare(changed, verbose=False).train) == len(small_pairs) - 1
    assert len(_cache_entries(cfg)) == 3


def test_cli_prepare_reports_data_errors_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["prepare", str(CONFIGS / "multi30k_de_en.yaml"), "--set", f"data.train={tmp_path / 'none'}"])
    assert status == 2
    assert "file not found" in capsys.readouterr().err


# ---- Multi30k --------------------------------------------------------------------------------------------


def test_multi30k_batches_of_4096_tokens_carry_under_10_percent_padding(multi30k_dir: Path) -> None:
    cfg = load_config(CONFIGS / "multi30k_de_en.yaml", [f"data.train={multi30k_dir / 'train'}",
                                                        f"data.dev={multi30k_dir / 'val'}",
                                                        f"data.test={multi30k_dir / 'test_2016_flickr'}"])
    assert (cfg.tokenizer.type, cfg.tokenizer.vocab_size, cfg.tokenizer.joint) == ("bpe", 8000, True)
    prepared = prepare(cfg, verbose=False)
    assert (len(prepared.train), len(prepared.dev), len(prepared.test)) == (29000, 1014, 1000)
    batches = prepared.train.batch_order(4096, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(29000))
    assert padding_ratio(prepared.train, batches) < 0.10
