"""Streaming preparation: block readers and their errors, several corpora per split, sampling, parallel encoding."""

from __future__ import annotations

import gzip
import logging
import random
import re
from pathlib import Path

import numpy as np
import pytest

from seq2seq import textio
from seq2seq.config import load_config
from seq2seq.data import encoding, prepare
from seq2seq.data import preparation as preparation_module
from seq2seq.data.batches import EncodedCorpus
from seq2seq.data.columns import TextColumn
from seq2seq.data.corpora import read_split
from seq2seq.data.streaming import hf_blocks, jsonl_blocks, text_pair_blocks, tsv_blocks
from seq2seq.data.tokenizer_training import train_tokenizer
from seq2seq.errors import ConfigError, DataError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture
def tiny_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read 16 bytes at a time, so that every test crosses many block boundaries."""
    monkeypatch.setattr(textio, "CHUNK_BYTES", 16)


def _write(path: Path, data: bytes, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _lines(n: int, word: str = "Wort") -> list[str]:
    return [f"{word} {i} äöü" for i in range(n)]


def _text_files(folder: Path, name: str, pairs: list[tuple[str, str]]) -> Path:
    for lang, side in (("de", 0), ("en", 1)):
        (folder / f"{name}.{lang}").write_text("".join(p[side] + "\n" for p in pairs), encoding="utf-8")
    return folder / name


# ---- block readers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_blocks_rebuild_every_line_whatever_the_chunk_size(tmp_path: Path, gz: bool,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(0)
    lines = ["".join(rng.choice("ab é€\t") for _ in range(rng.randrange(0, 30))) for _ in range(200)]
    data = "\r\n".join(lines[:100]).encode() + b"\r\n" + "\n".join(lines[100:]).encode()  # no final newline
    path = _write(tmp_path / "x.txt", data, gz)
    for chunk in (1, 7, 64, 1 << 20):
        monkeypatch.setattr(textio, "CHUNK_BYTES", chunk)
        blocks = list(textio.stream_line_blocks(path))
        assert [line for _, block in blocks for line in block] == lines
        assert [first for first, _ in blocks] == list(np.cumsum([1] + [len(b) for _, b in blocks[:-1]]))


@pytest.mark.parametrize("gz", [False, True])
def test_invalid_utf8_names_the_file_and_the_line_in_a_later_block(tmp_path: Path, gz: bool, tiny_chunks) -> None:
    lines = [line.encode() for line in _lines(50)]
    lines[36] = b"caf\xe9 au lait"
    path = _write(tmp_path / "train.en", b"\n".join(lines) + b"\n", gz)
    with pytest.raises(DataError, match=r"train\.en, line 37: invalid UTF-8 \(invalid continuation byte at byte 4"):
        list(textio.stream_line_blocks(path))


def test_hash_feed_sees_the_decompressed_bytes_and_progress_the_file_bytes(tmp_path: Path, tiny_chunks) -> None:
    data = "".join(line + "\n" for line in _lines(40)).encode()
    path = _write(tmp_path / "x.gz", data, gz=True)
    fed: list[bytes] = []
    progress: list[int] = []
    list(textio.stream_line_blocks(path, fed.append, progress.append))
    assert b"".join(fed) == data
    assert sum(progress) == path.stat().st_size


@pytest.mark.parametrize(("src_count", "tgt_count"), [(50, 47), (47, 50), (0, 3), (3, 0)])
def test_misaligned_files_name_both_files_and_their_counts(tmp_path: Path, tiny_chunks, src_count: int,
                                                           tgt_count: int) -> None:
    src = _write(tmp_path / "a.de", "".join(s + "\n" for s in _lines(src_count)).encode())
    tgt = _write(tmp_path / "a.en.gz", "".join(s + "\n" for s in _lines(tgt_count)).encode(), gz=True)
    with pytest.raises(DataError, match=rf"a\.de has {src_count} lines but .*a\.en\.gz has {tgt_count}: parallel"):
        list(text_pair_blocks(src, tgt))


def test_aligned_files_pair_line_by_line(tmp_path: Path, tiny_chunks) -> None:
    src = _write(tmp_path / "a.de", "".join(s + "\n" for s in _lines(30, "Haus")).encode())
    tgt = _write(tmp_path / "a.en", "".join(s + "\n" for s in _lines(30, "house")).encode())
    pairs = [pair for src_block, tgt_block in text_pair_blocks(src, tgt) for pair in zip(src_block, tgt_block)]
    assert pairs == list(zip(_lines(30, "Haus"), _lines(30, "house")))


def test_tsv_and_jsonl_errors_name_the_line_in_a_later_block(tmp_path: Path, tiny_chunks) -> None:
    rows = [f"{s}\t{t}" for s, t in zip(_lines(40), _lines(40))]
    rows[33] = "no tab here"
    tsv = _write(tmp_path / "x.tsv", ("\n".join(rows) + "\n").encode())
    with pytest.raises(DataError, match=r"x\.tsv, line 34: expected 2 tab-separated fields"):
        list(tsv_blocks(tsv))
    records = ['{"de": "a", "en": "b"}'] * 40
    records[28] = '{"de": "a", "en": '
    jsonl = _write(tmp_path / "x.jsonl", ("\n".join(records) + "\n").encode())
    with pytest.raises(DataError, match=r"x\.jsonl, line 29: not valid JSON"):
        list(jsonl_blocks(jsonl, "de", "en"))


def test_hugging_face_rows_come_in_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import seq2seq.data.streaming as streaming

    monkeypatch.setattr(streaming, "BLOCK_PAIRS", 3)
    path = tmp_path / "x.jsonl"
    path.write_text("".join(f'{{"t": {{"de": "d{i}", "en": "e{i}"}}}}\n' for i in range(7)), encoding="utf-8")
    blocks = list(hf_blocks("json", str(path), "t.de", "t.en", cache_dir=str(tmp_path / "hf")))
    assert [len(src) for src, _ in blocks] == [3, 3, 1]
    assert [s for src, _ in blocks for s in src] == [f"d{i}" for i in range(7)]


# ---- several corpora per split --------------------------------------------------------------------------------


def _two_corpora(tmp_path: Path, small_pairs: list[tuple[str, str]]) -> list[str]:
    first = _text_files(tmp_path, "europarl", [*small_pairs[:12], ("", "orphan")])
    tsv = tmp_path / "cc.tsv"
    tsv.write_text("".join(f"{s}\t{t}\n" for s, t in small_pairs[12:]) + "\n" + " x\t \n", encoding="utf-8")
    return [f"data.train=[{first}, 'tsv:{tsv}']", "data.format=text", f"data.cache_dir={tmp_path / 'cache'}",
            "tokenizer.vocab_size=300", "train.batch_size=200"]


def test_a_split_of_several_corpora_in_several_formats_reports_each(tmp_path: Path, small_pairs,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    cfg = load_config(None, _two_corpora(tmp_path, small_pairs))
    assert isinstance(cfg.data.train, list) and len(cfg.data.train) == 2
    with caplog.at_level(logging.INFO, logger="seq2seq.data.preparation"):
        prepared = prepare(cfg)
    assert list(prepared.train.src_text) == [s for s, _ in small_pairs]
    (first, first_report), (second, second_report) = prepared.train.sources
    assert first.endswith("europarl.de / " + str(tmp_path / "europarl.en")) and second.endswith("cc.tsv")
    assert (first_report.read, first_report.dropped_empty, first_report.kept) == (13, 1, 12)
    assert (second_report.read, second_report.dropped_empty, second_report.kept) == (10, 2, 8)
    assert prepared.train.report.read == 23 and prepared.train.report.dropped_empty == 3
    assert f"  {first}: 12 pairs kept of 13 (dropped 1 empty" in caplog.text
    assert f"  {second}: 8 pairs kept of 10 (dropped 2 empty" in caplog.text
    whole = read_split(cfg.data, "train")
    assert len(whole) == 23 and whole.origin == f"{first} + {second}"


def test_a_single_corpus_string_and_a_list_of_one_read_the_same(tmp_path: Path, small_pairs) -> None:
    prefix = _text_files(tmp_path, "train", small_pairs)
    common = ["data.format=text", f"data.cache_dir={tmp_path / 'cache'}", "tokenizer.vocab_size=300"]
    one = prepare(load_config(None, [f"data.train={prefix}", *common]), verbose=False)
    listed = prepare(load_config(None, [f"data.train=[{prefix}]", *common]), verbose=False)
    assert one.cache_dir == listed.cache_dir and one.train.src_ids == listed.train.src_ids


def test_an_empty_corpus_entry_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="data.train"):
        load_config(None, ["data.format=text", "data.train=[a, '']"])


def test_an_empty_corpus_among_several_is_named(tmp_path: Path, small_pairs) -> None:
    settings = _two_corpora(tmp_path, small_pairs)
    (tmp_path / "cc.tsv").write_text("\n \t \n", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty corpus: train data .*cc\.tsv has no pair"):
        prepare(load_config(None, settings), verbose=False)


# ---- what prepare computes -------------------------------------------------------------------------------------


def _old_prepare_train(cfg, max_length: int) -> tuple[str, EncodedCorpus]:
    """The former in-memory algorithm: read all, drop blank pairs, train on all, encode, drop long pairs."""
    raw = read_split(cfg.data, "train")
    pairs = [(s, t) for s, t in zip(raw.src, raw.tgt) if s.strip() and t.strip()]
    src, tgt = [s for s, _ in pairs], [t for _, t in pairs]
    tokenizer = train_tokenizer(src, tgt, cfg.tokenizer)
    src_ids, tgt_ids = tokenizer.encode_src_batch(src), tokenizer.encode_tgt_batch(tgt)
    kept = [i for i in range(len(src)) if 0 < len(src_ids[i]) <= max_length and 0 < len(tgt_ids[i]) <= max_length]
    return tokenizer.fingerprint(), EncodedCorpus.from_ids([src_ids[i] for i in kept], [tgt_ids[i] for i in kept],
                                                           [src[i] for i in kept], [tgt[i] for i in kept])


def _old_batch_order(corpus: EncodedCorpus, max_tokens: int, seed: int, epoch: int) -> list[list[int]]:
    """batch_order on the lengths of the in-memory corpus, written out again as plain Python."""
    rng = np.random.default_rng([seed, epoch])
    order = np.lexsort((rng.permutation(len(corpus)), corpus.tgt_lengths, corpus.src_lengths)).tolist()
    batches, current, longest = [], [], 0
    for i in order:
        pair = max(corpus.src_lengths[i], corpus.tgt_lengths[i] + 1)
        if current and (len(current) + 1) * max(longest, pair) > max_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, pair)
    batches.append(current)
    batches = [sorted(batch, key=lambda i: -corpus.tgt_lengths[i]) for batch in batches]  # longest target first
    return [batches[i] for i in rng.permutation(len(batches))]


def test_multi30k_style_ids_tokenizer_and_batches_equal_the_in_memory_algorithm(tmp_path: Path,
                                                                                multi30k_dir: Path) -> None:
    """The reference config on the first 4000 Multi30k pairs (a smaller vocabulary keeps the test fast)."""
    for lang in ("de", "en"):
        lines = gzip.decompress((multi30k_dir / f"train.{lang}.gz").read_bytes()).split(b"\n")[:4000]
        _write(tmp_path / f"train.{lang}.gz", b"\n".join(lines) + b"\n", gz=True)
    cfg = load_config(CONFIGS / "multi30k_de_en.yaml", [f"data.train={tmp_path / 'train'}", "data.dev=", "data.test=",
                                                        f"data.cache_dir={tmp_path / 'cache'}",
                                                        "tokenizer.vocab_size=2000"])
    fingerprint, old = _old_prepare_train(cfg, cfg.data.max_length)
    new = prepare(cfg, verbose=False)
    assert new.tokenizer.fingerprint() == fingerprint
    assert isinstance(new.train.src_text, TextColumn) and isinstance(new.train.arrays()["src_flat"], np.memmap)
    assert np.array_equal(new.train.src_lengths, old.src_lengths)
    for i in range(0, len(old), 97):
        assert (new.train.src_ids[i], new.train.tgt_text[i]) == (old.src_ids[i], old.tgt_text[i])
    for max_tokens in (512, 2048):
        assert new.train.batch_order(max_tokens, seed=3, epoch=1) == _old_batch_order(old, max_tokens, seed=3, epoch=1)


def test_small_corpus_equals_the_in_memory_algorithm(tmp_path: Path, small_pairs) -> None:
    prefix = _text_files(tmp_path, "train", [*small_pairs, ("", "x"), (" ".join(["Hund"] * 60), "dog")])
    cfg = load_config(None, [f"data.train={prefix}", "data.format=text", f"data.cache_dir={tmp_path / 'c'}",
                             "tokenizer.vocab_size=300", "data.max_length=40"])
    fingerprint, old = _old_prepare_train(cfg, 40)
    new = prepare(cfg, verbose=False).train
    assert (list(new.src_ids), list(new.tgt_ids), list(new.src_text)) == \
        (list(old.src_ids), list(old.tgt_ids), list(old.src_text))
    assert new.batch_order(100, seed=5) == _old_batch_order(old, 100, seed=5, epoch=0)


def test_parallel_encoding_equals_encoding_in_process(tmp_path: Path, small_pairs,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pairs = [(f"{s} {i}", f"{t} {i}") for i in range(5) for s, t in small_pairs]
    prefix = _text_files(tmp_path, "train", pairs)
    settings = [f"data.train={prefix}", "data.format=text", "tokenizer.vocab_size=300", "data.max_length=25"]
    alone = prepare(load_config(None, [*settings, f"data.cache_dir={tmp_path / 'a'}"]), verbose=False).train
    monkeypatch.setattr(encoding, "PARALLEL_MIN_PAIRS", 0)
    monkeypatch.setattr(encoding, "CHUNK_PAIRS", 7)
    pooled = prepare(load_config(None, [*settings, f"data.cache_dir={tmp_path / 'b'}"]), verbose=False).train
    assert 0 < len(pooled) < len(pairs)  # some pairs are over max_length
    assert pooled.src_ids == alone.src_ids and pooled.tgt_ids == alone.tgt_ids
    assert pooled.src_text == alone.src_text and pooled.report == alone.report


def test_the_tokenizer_learns_from_a_bounded_deterministic_sample(tmp_path: Path, small_pairs,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preparation_module, "MAX_TRAIN_SENTENCES", 16)  # joint: 8 pairs
    seen: list[list[str]] = []
    real = preparation_module.load_or_train_tokenizer

    def record(src, tgt, *args, **kwargs):
        seen.append(list(src))
        return real(src, tgt, *args, **kwargs)

    monkeypatch.setattr(preparation_module, "load_or_train_tokenizer", record)
    prefix = _text_files(tmp_path, "train", small_pairs)
    for cache in ("a", "b"):
        prepare(load_config(None, [f"data.train={prefix}", "data.format=text", f"data.cache_dir={tmp_path / cache}",
                                   "tokenizer.vocab_size=300"]), verbose=False)
    sources = [s for s, _ in small_pairs]
    assert len(seen[0]) == 8 and seen[0] == seen[1]
    assert seen[0] == sorted(seen[0], key=sources.index)  # a subset, in corpus order


def test_unchanged_files_are_not_read_again_and_changed_ones_are(tmp_path: Path, small_pairs,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = _text_files(tmp_path, "train", small_pairs)
    cfg = load_config(None, [f"data.train={prefix}", "data.format=text", f"data.cache_dir={tmp_path / 'cache'}",
                             "tokenizer.vocab_size=300"])
    first = prepare(cfg, verbose=False)

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("an unchanged corpus was read again")

    monkeypatch.setattr("seq2seq.data.streaming.stream_line_blocks", no_reading)
    assert prepare(cfg, verbose=False).train.src_ids == first.train.src_ids
    _text_files(tmp_path, "train", small_pairs[:-1])
    with pytest.raises(AssertionError, match="read again"):
        prepare(cfg, verbose=False)


def test_progress_is_logged_as_plain_lines_off_a_terminal(tmp_path: Path, small_pairs,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr("seq2seq.data.progress.LOG_EVERY_S", 0.0)
    prefix = _text_files(tmp_path, "train", small_pairs)
    cfg = load_config(None, [f"data.train={prefix}", "data.format=text", f"data.cache_dir={tmp_path / 'cache'}",
                             "tokenizer.vocab_size=300"])
    with caplog.at_level(logging.INFO, logger="seq2seq.data.preparation"):
        prepare(cfg)
    size = (tmp_path / "train.de").stat().st_size + (tmp_path / "train.en").stat().st_size
    assert re.search(rf"reading: {size / 1000:.1f}kB of {size / 1000:.1f}kB \(100%\)", caplog.text)
    assert "encoding: 20 pairs of 20 pairs (100%)" in caplog.text


def test_a_line_sample_reads_the_same_lines_as_the_memory_mapped_column(tmp_path: Path) -> None:
    from seq2seq.data.columns import LineSample
    from seq2seq.data.store import TextWriter

    lines = [f"Zeile {i} " + "ä" * (i % 7) for i in range(300)]
    writer = TextWriter(tmp_path / "x.txt")
    for start in range(0, 300, 40):
        writer.append(lines[start:start + 40])
    writer.close()
    rows = np.array([0, 5, 6, 150, 298, 299])
    for chunk in (3, 64, 1 << 20):
        assert list(LineSample(tmp_path / "x.txt", rows, chunk_bytes=chunk)) == [lines[i] for i in rows]
        assert list(LineSample(tmp_path / "x.txt", chunk_bytes=chunk)) == lines
    assert list(TextColumn.open(tmp_path / "x.txt", rows)) == [lines[i] for i in rows]


def test_a_leading_bom_in_a_streamed_corpus_is_not_text(tmp_path: Path) -> None:
    (tmp_path / "c.de").write_bytes(b"\xef\xbb\xbfeins zwei\ndrei\n")
    (tmp_path / "c.en").write_bytes(b"\xef\xbb\xbfone two\nthree\n")
    pairs = read_split(load_config(None, ["data.format=text", f"data.train={tmp_path / 'c'}", "data.src_lang=de",
                                          "data.tgt_lang=en"]).data, "train")
    assert (pairs.src, pairs.tgt) == (["eins zwei", "drei"], ["one two", "three"])
