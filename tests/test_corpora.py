"""Each reader of parallel text, and the errors it raises for bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from seq2seq.config import DataConfig
from seq2seq.data.corpora import read_hf, read_jsonl, read_split, read_text_pair, read_tsv
from seq2seq.errors import DataError

SRC = ["Ein Hund läuft .", "Zwei Katzen schlafen .", "Ein Kind lacht ."]
TGT = ["A dog runs .", "Two cats sleep .", "A child laughs ."]


def _write_lines(path: Path, lines: list[str], gz: bool = False) -> Path:
    data = ("\n".join(lines) + "\n").encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize(("src_gz", "tgt_gz"), [(False, False), (True, True), (False, True)])
def test_text_pair_reads_plain_and_gzipped_files(tmp_path: Path, src_gz: bool, tgt_gz: bool) -> None:
    _write_lines(tmp_path / ("train.de.gz" if src_gz else "train.de"), SRC, src_gz)
    _write_lines(tmp_path / ("train.en.gz" if tgt_gz else "train.en"), TGT, tgt_gz)
    pairs = read_text_pair(tmp_path / "train", "de", "en")
    assert pairs.src == SRC
    assert pairs.tgt == TGT


def test_text_pair_with_different_line_counts_names_both_files_and_counts(tmp_path: Path) -> None:
    _write_lines(tmp_path / "train.de", SRC)
    _write_lines(tmp_path / "train.en.gz", TGT[:2], gz=True)
    with pytest.raises(DataError, match=r"train\.de has 3 lines but .*train\.en\.gz has 2"):
        read_text_pair(tmp_path / "train", "de", "en")


def test_text_pair_missing_file_names_its_path(tmp_path: Path) -> None:
    _write_lines(tmp_path / "train.de", SRC)
    with pytest.raises(DataError, match=r"file not found: .*train\.en \(nor train\.en\.gz\)"):
        read_text_pair(tmp_path / "train", "de", "en")


def test_text_pair_invalid_utf8_names_file_and_line(tmp_path: Path) -> None:
    _write_lines(tmp_path / "train.de", SRC)
    (tmp_path / "train.en").write_bytes(b"A dog runs .\nTwo cats \xe9 sleep .\nA child laughs .\n")
    with pytest.raises(DataError, match=r"train\.en, line 2: invalid UTF-8"):
        read_text_pair(tmp_path / "train", "de", "en")


def test_tsv_reads_source_tab_target(tmp_path: Path) -> None:
    _write_lines(tmp_path / "train.tsv", [f"{s}\t{t}" for s, t in zip(SRC, TGT)] + [""])
    pairs = read_tsv(tmp_path / "train.tsv")
    assert pairs.src == [*SRC, ""]  # a blank line is an empty pair, dropped (and counted) by prepare
    assert pairs.tgt == [*TGT, ""]


def test_tsv_line_with_wrong_field_count_names_file_and_line(tmp_path: Path) -> None:
    _write_lines(tmp_path / "train.tsv", [f"{SRC[0]}\t{TGT[0]}", f"{SRC[1]}\t{TGT[1]}\textra"])
    with pytest.raises(DataError, match=r"train\.tsv, line 2: expected 2 tab-separated fields .*found 3"):
        read_tsv(tmp_path / "train.tsv")


def test_jsonl_with_custom_and_nested_keys(tmp_path: Path) -> None:
    records = [{"id": i, "translation": {"de": s, "en": t}} for i, (s, t) in enumerate(zip(SRC, TGT))]
    path = _write_lines(tmp_path / "train.jsonl", [json.dumps(r, ensure_ascii=False) for r in records])
    pairs = read_jsonl(path, "translation.de", "translation.en")
    assert (pairs.src, pairs.tgt) == (SRC, TGT)


def test_jsonl_flat_keys_via_config(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "d.jsonl", [json.dumps({"source": s, "target": t}) for s, t in zip(SRC, TGT)])
    cfg = DataConfig(format="jsonl", train=str(path), src_field="source", tgt_field="target")
    pairs = read_split(cfg, "train")
    assert (pairs.src, pairs.tgt) == (SRC, TGT)
    assert read_split(cfg, "dev") is None


def test_jsonl_missing_key_names_line_and_available_keys(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "d.jsonl", [json.dumps({"de": "a", "en": "b"}), json.dumps({"de": "c", "fr": "d"})])
    with pytest.raises(DataError, match=r"d\.jsonl, line 2: no key 'en' \(keys here: de, fr\); set data\.tgt_field"):
        read_jsonl(path, "de", "en")


def test_jsonl_invalid_json_names_line(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "d.jsonl", [json.dumps({"de": "a", "en": "b"}), "{not json"])
    with pytest.raises(DataError, match=r"d\.jsonl, line 2: not valid JSON"):
        read_jsonl(path, "de", "en")


def test_jsonl_non_string_value_is_an_error(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "d.jsonl", [json.dumps({"de": "a", "en": 5})])
    with pytest.raises(DataError, match=r"d\.jsonl, line 1: 'en' must be a string, got int"):
        read_jsonl(path, "de", "en")


def test_hf_json_builder_with_nested_column_mapping(tmp_path: Path) -> None:
    records = [{"translation": {"de": s, "en": t}} for s, t in zip(SRC, TGT)]
    path = _write_lines(tmp_path / "train.json", [json.dumps(r, ensure_ascii=False) for r in records])
    pairs = read_hf("json", str(path), "translation.de", "translation.en", cache_dir=str(tmp_path / "hf"))
    assert (pairs.src, pairs.tgt) == (SRC, TGT)


def test_hf_csv_builder_with_column_mapping(tmp_path: Path) -> None:
    rows = ["german,english"] + [f'"{s}","{t}"' for s, t in zip(SRC, TGT)]
    path = _write_lines(tmp_path / "train.csv", rows)
    pairs = read_hf("csv", str(path), "german", "english", cache_dir=str(tmp_path / "hf"))
    assert (pairs.src, pairs.tgt) == (SRC, TGT)


def test_hf_missing_column_lists_the_columns(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "train.json", [json.dumps({"de": s, "en": t}) for s, t in zip(SRC, TGT)])
    with pytest.raises(DataError, match=r"has no column 'fr' \(columns: de, en\); set data\.tgt_field"):
        read_hf("json", str(path), "de", "fr", cache_dir=str(tmp_path / "hf"))


def test_hf_missing_data_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"file not found: .*absent\.json"):
        read_hf("json", str(tmp_path / "absent.json"), "de", "en", cache_dir=str(tmp_path / "hf"))


def test_hf_unreachable_hub_dataset_is_a_data_error(tmp_path: Path) -> None:
    # Tests run offline (conftest): a hub name cannot be fetched and must fail cleanly, naming it.
    with pytest.raises(DataError, match=r"could not load Hugging Face dataset no-such-user/no-such-dataset"):
        read_hf("no-such-user/no-such-dataset", "train", "de", "en", cache_dir=str(tmp_path / "hf"))


def test_read_split_hf_local_files_via_config(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "dev.json", [json.dumps({"de": s, "en": t}) for s, t in zip(SRC, TGT)])
    cfg = DataConfig(format="hf", hf_name="json", train=str(path), dev=str(path))
    pairs = read_split(cfg, "dev")  # src_field/tgt_field default to the language codes
    assert (pairs.src, pairs.tgt) == (SRC, TGT)
