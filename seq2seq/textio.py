"""Reading text strictly as UTF-8, from plain or gzipped files and from streams.

Every reader fails with a :class:`DataError` that names the file (or stream) and the
1-based line number of the first undecodable byte, instead of silently replacing it:
a corpus with broken encoding is a mistake the user should see and fix.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, TextIO

from .errors import DataError

GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: str | Path) -> bytes:
    """The whole content of ``path``, decompressed when it is gzip (by content, whatever its name)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    raw = path.read_bytes()
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path} is not a readable gzip file (truncated or corrupt?): {exc}") from exc


def decode_utf8(data: bytes, name: str) -> str:
    """Decode ``data`` as strict UTF-8; an invalid byte raises DataError naming ``name`` and its line."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_number = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError(f"{name}, line {line_number}: invalid UTF-8 ({exc.reason} at byte {column} "
                        f"of the line); re-encode the file as UTF-8, e.g. with iconv") from None


def split_lines(text: str) -> list[str]:
    """Lines of ``text`` without their newline (``\\n`` or ``\\r\\n``); a final newline adds no empty line.

    ``str.splitlines`` is not used on purpose: it also splits on U+2028, U+0085 and
    other characters that may legitimately occur inside a sentence, which would
    silently misalign two parallel files.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_lines(path: str | Path) -> list[str]:
    """All lines of a UTF-8 text file, plain or ``.gz``, with only the newline stripped."""
    return split_lines(decode_utf8(read_bytes(path), str(path)))


def open_binary(path: str | Path) -> BinaryIO:
    """A binary stream over ``path``, decompressing gzip on the fly (for files too large to read at once)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    with path.open("rb") as probe:
        is_gzip = probe.read(2) == GZIP_MAGIC
    return gzip.open(path, "rb") if is_gzip else path.open("rb")


def iter_lines(stream: BinaryIO | TextIO, name: str) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each line of ``stream`` (1-based, newline stripped).

    ``stream`` may be binary (decoded here, strictly) or text (e.g. ``sys.stdin``, whose
    underlying binary buffer is read so that a bad byte raises instead of being
    replaced). ``name`` is what error messages call the stream, e.g. ``<stdin>``.
    """
    binary = getattr(stream, "buffer", stream) if isinstance(stream, io.TextIOBase) else stream
    for line_number, line in enumerate(binary, start=1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{name}, line {line_number}: invalid UTF-8 ({exc.reason} at byte "
                                f"{exc.start + 1} of the line); re-encode the input as UTF-8") from None
        if line.endswith("\n"):
            line = line[:-1]
        if line.endswith("\r"):
            line = line[:-1]
        yield line_number, line


def iter_file_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Stream ``(line_number, text)`` from a plain or ``.gz`` file; errors name the file and line."""
    try:
        with open_binary(path) as stream:
            yield from iter_lines(stream, str(path))
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path} could not be read (truncated or corrupt gzip?): {exc}") from exc
