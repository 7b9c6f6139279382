"""Atomic writes: a failure mid-write leaves the previous file (or nothing), never part of a new one."""

from __future__ import annotations

from pathlib import Path

import pytest

from seq2seq.data.cache import install_entry, scratch_directory
from seq2seq.writing import atomic_file


def test_atomic_file_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old\n", encoding="utf-8")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as handle:
            handle.write("half of the new con")
            raise RuntimeError("disk full")
    assert target.read_text(encoding="utf-8") == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]  # no temporary file left behind

    with atomic_file(target) as handle:
        handle.write("new\n")
    assert target.read_text(encoding="utf-8") == "new\n"


def test_atomic_file_bytes_and_new_directories(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "blob.bin"
    with atomic_file(target, "wb") as handle:
        handle.write(b"\x00\xff")
    assert target.read_bytes() == b"\x00\xff"
    with pytest.raises(ValueError, match="mode"):
        with atomic_file(target, "a"):
            pass


def test_a_cache_entry_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "cache"
    with pytest.raises(OSError):
        with scratch_directory(target) as tmp:
            (tmp / "part").write_text("x")
            raise OSError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with scratch_directory(target) as tmp:
        (tmp / "done").write_text("y")
        assert install_entry(tmp, target)
    assert (target / "done").read_text() == "y"
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]
