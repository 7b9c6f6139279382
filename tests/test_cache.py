"""Cache entries: checksummed, never read half-written, repaired with a warning when damaged."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from seq2seq.config import Config, load_config
from seq2seq.data import prepare
from seq2seq.data.cache import MANIFEST, install_entry, verify_entry, write_manifest

DAMAGES = ("truncate", "flip", "delete")


def _config(tmp_path: Path, pairs: list[tuple[str, str]] | None) -> Config:
    """Train and dev files under ``tmp_path`` (written from ``pairs`` unless None) and a config reading them."""
    for lang, side in (("de", 0), ("en", 1)) if pairs else ():
        (tmp_path / f"train.{lang}").write_text("".join(p[side] + "\n" for p in pairs), encoding="utf-8")
        (tmp_path / f"dev.{lang}").write_text("".join(p[side] + "\n" for p in pairs[:5]), encoding="utf-8")
    return load_config(None, [f"data.train={tmp_path / 'train'}", f"data.dev={tmp_path / 'dev'}", "data.format=text",
                              f"data.cache_dir={tmp_path / 'cache'}", "tokenizer.vocab_size=300"])


def _damage(path: Path, how: str) -> None:
    if how == "delete":
        path.unlink()
        return
    data = bytearray(path.read_bytes())
    if how == "truncate":
        del data[len(data) // 2:]
    else:  # flip one bit in the middle: same size, so only the checksum can tell
        data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def _snapshot(prepared) -> tuple:
    return (prepared.tokenizer.fingerprint(), list(prepared.train.src_ids), list(prepared.train.tgt_text),
            list(prepared.dev.src_ids), list(prepared.dev.tgt_text), prepared.train.report)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, small_pairs) -> tuple[Path, tuple]:
    """Corpus files and a complete cache, built once; tests damage a copy."""
    folder = tmp_path_factory.mktemp("template")
    return folder, _snapshot(prepare(_config(folder, small_pairs), verbose=False))


@pytest.fixture
def built(template: tuple[Path, tuple], tmp_path: Path) -> tuple[Config, tuple]:
    folder, expected = template
    shutil.copytree(folder, tmp_path / "copy")
    return _config(tmp_path / "copy", None), expected


# Every kind of file of an encoded-corpus entry: ids, their offsets, kept lines, text, text offsets, meta, manifest.
DATA_FILES = ("train.src.ids", "train.tgt.offsets", "train.kept", "dev.tgt.txt", "train.src.txt.offsets",
              "meta.json", MANIFEST)


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("name", DATA_FILES)
def test_a_damaged_corpus_entry_is_rebuilt_with_a_warning_naming_it(built, name: str, how: str,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    cfg, expected = built
    (entry,) = (Path(cfg.data.cache_dir) / "data").iterdir()
    _damage(entry / name, how)
    assert verify_entry(entry) is not None
    with caplog.at_level(logging.WARNING, logger="seq2seq.data.cache"):
        again = prepare(cfg, verbose=False)
    assert f"cache entry {entry} is damaged" in caplog.text
    assert _snapshot(again) == expected
    assert verify_entry(entry) is None and again.cache_dir == entry
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]  # the broken copy is gone, no temporary left


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("name", ("src.model", "tokenizer.json", MANIFEST))
def test_a_damaged_tokenizer_entry_is_trained_again_with_a_warning(built, name: str, how: str,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    cfg, expected = built
    (entry,) = (Path(cfg.data.cache_dir) / "tokenizer").iterdir()
    _damage(entry / name, how)
    with caplog.at_level(logging.WARNING, logger="seq2seq.data.cache"):
        again = prepare(cfg, verbose=False)
    assert f"cache entry {entry} is damaged" in caplog.text
    assert _snapshot(again) == expected
    assert verify_entry(entry) is None


def test_an_entry_without_its_manifest_is_never_read(built, caplog: pytest.LogCaptureFixture) -> None:
    """A folder whose writer died before the manifest (the last file) is half-written, whatever else it holds."""
    cfg, expected = built
    (entry,) = (Path(cfg.data.cache_dir) / "data").iterdir()
    (entry / MANIFEST).unlink()
    (entry / "train.src.ids").write_bytes(b"\0" * (entry / "train.src.ids").stat().st_size)  # plausible garbage
    with caplog.at_level(logging.WARNING, logger="seq2seq.data.cache"):
        again = prepare(cfg, verbose=False)
    assert f"cache entry {entry} is damaged (no {MANIFEST}" in caplog.text
    assert _snapshot(again) == expected
    assert verify_entry(entry) is None


def test_a_crash_before_the_manifest_leaves_no_entry_and_temporary_folders_are_not_read(
        built, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, _ = built
    data = Path(cfg.data.cache_dir) / "data"
    (entry,) = data.iterdir()
    other = data / f".{entry.name}.abc.tmp"  # another process's build in progress: left alone
    other.mkdir()

    def crash(directory: Path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("seq2seq.data.preparation.write_manifest", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare(load_config(None, [f"data.train={cfg.data.train}", "data.format=text", "data.max_length=60",
                                   f"data.cache_dir={cfg.data.cache_dir}", "tokenizer.vocab_size=300"]), verbose=False)
    assert sorted(p.name for p in data.iterdir()) == sorted([entry.name, other.name])


def test_install_replaces_a_damaged_entry_and_keeps_a_sound_one(tmp_path: Path) -> None:
    target = tmp_path / "entry"
    for content in (b"first", b"second"):
        tmp = tmp_path / f".{content.decode()}.tmp"
        tmp.mkdir()
        (tmp / "x").write_bytes(content)
        write_manifest(tmp)
        installed = install_entry(tmp, target)
        assert installed == (content == b"first")  # a sound entry is kept, the newer copy left to its builder
    assert (target / "x").read_bytes() == b"first"
    (target / "x").write_bytes(b"fir5t")
    tmp = tmp_path / ".third.tmp"
    tmp.mkdir()
    (tmp / "x").write_bytes(b"third")
    write_manifest(tmp)
    assert install_entry(tmp, target)
    assert (target / "x").read_bytes() == b"third" and verify_entry(target) is None
    assert sorted(os.listdir(tmp_path)) == [".second.tmp", "entry"]  # the caller removes its unused copy
