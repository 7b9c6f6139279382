"""Strict UTF-8 reading of plain and gzipped files and of streams; errors name the file and the line."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest

from seq2seq.errors import DataError
from seq2seq.textio import iter_file_lines, iter_lines, read_lines, split_lines

LINES = ["Ein Hund läuft.", "", "  zwei  Leerzeichen  ", "東京 🙂", "tab\tinside"]


def _write(path: Path, data: bytes, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_read_lines_strips_only_the_newline(tmp_path: Path, gz: bool) -> None:
    path = _write(tmp_path / ("a.txt.gz" if gz else "a.txt"), ("\n".join(LINES) + "\n").encode(), gz)
    assert read_lines(path) == LINES


def test_gzip_is_detected_by_content_not_by_name(tmp_path: Path) -> None:
    path = _write(tmp_path / "plain_name.txt", "a\nb\n".encode(), gz=True)
    assert read_lines(path) == ["a", "b"]


def test_crlf_and_missing_final_newline(tmp_path: Path) -> None:
    assert read_lines(_write(tmp_path / "a.txt", b"one\r\ntwo\r\nthree")) == ["one", "two", "three"]


def test_unicode_line_separators_do_not_split_a_sentence() -> None:
    # str.splitlines would cut these lines in two and misalign a parallel corpus.
    assert split_lines("a\u2028b\nc\x85d\x0ce\n") == ["a\u2028b", "c\x85d\x0ce"]


def test_empty_file_has_no_lines(tmp_path: Path) -> None:
    assert read_lines(_write(tmp_path / "empty.txt", b"")) == []


@pytest.mark.parametrize("gz", [False, True])
def test_invalid_utf8_names_file_and_line(tmp_path: Path, gz: bool) -> None:
    path = _write(tmp_path / "bad.de", b"fine\nalso fine\nbroken \xff byte\n", gz)
    with pytest.raises(DataError, match=r"bad\.de, line 3: invalid UTF-8 .*byte 8 of the line"):
        read_lines(path)


def test_latin1_file_is_rejected_not_guessed(tmp_path: Path) -> None:
    path = _write(tmp_path / "latin1.txt", "Grüße\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.txt, line 1: invalid UTF-8"):
        read_lines(path)


def test_missing_file_names_its_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"file not found: .*missing\.en"):
        read_lines(tmp_path / "missing.en")


def test_truncated_gzip_is_a_data_error(tmp_path: Path) -> None:
    data = gzip.compress(b"a line\n" * 1000)
    path = _write(tmp_path / "cut.gz", data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.gz is not a readable gzip file"):
        read_lines(path)


def test_iter_lines_on_a_binary_stream_numbers_lines_from_one() -> None:
    stream = io.BytesIO("first\r\nzweite äöü\n\nlast".encode())
    assert list(iter_lines(stream, "<stdin>")) == [(1, "first"), (2, "zweite äöü"), (3, ""), (4, "last")]


def test_iter_lines_reads_a_text_stream_through_its_binary_buffer() -> None:
    # sys.stdin is a TextIOWrapper: its buffer is read so that bad bytes raise instead of being replaced.
    stdin = io.TextIOWrapper(io.BytesIO(b"ok\nnot \xc3( ok\n"), encoding="utf-8", errors="replace")
    lines = iter_lines(stdin, "<stdin>")
    assert next(lines) == (1, "ok")
    with pytest.raises(DataError, match=r"<stdin>, line 2: invalid UTF-8 .*byte 5 of the line"):
        next(lines)


def test_iter_lines_accepts_a_plain_text_stream() -> None:
    assert list(iter_lines(io.StringIO("a\nb\n"), "text")) == [(1, "a"), (2, "b")]


def test_iter_file_lines_streams_gzip(tmp_path: Path) -> None:
    path = _write(tmp_path / "s.gz", "x\ny\n".encode(), gz=True)
    assert list(iter_file_lines(path)) == [(1, "x"), (2, "y")]
    with pytest.raises(DataError, match=r"file not found: .*nothing\.txt"):
        list(iter_file_lines(tmp_path / "nothing.txt"))
