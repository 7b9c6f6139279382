"""Reading text strictly as UTF-8: whole files, streams, and blocks of large files.

Every reader fails with a :class:`DataError` that names the file (or stream) and the
1-based line number of the first undecodable byte, instead of silently replacing it:
a corpus with broken encoding is a mistake the user should see and fix. A leading UTF-8
byte order mark (as some Windows editors write) is not text: it is dropped, with one warning.

Files are written through :mod:`seq2seq.writing`.
"""

from __future__ import annotations

import gzip
import io
import logging
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Callable, TextIO

from .errors import DataError

logger = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
BOM = "\ufeff"
_bom_reported: set[str] = set()


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file ("is a directory", "not found"), or None when it can."""
    if path.is_file():
        return None
    if path.is_dir():
        return f"{path} is a directory, not a file"
    if path.exists():
        return f"{path} is not a regular file"
    return f"file not found: {path}"


def drop_bom(text: str, name: str) -> str:
    """``text`` without a leading byte order mark; the first time ``name`` has one, a warning says so."""
    if not text.startswith(BOM):
        return text
    if name not in _bom_reported:
        _bom_reported.add(name)
        logger.warning("%s starts with a UTF-8 byte order mark (BOM); it is not part of the text and is dropped", name)
    return text[1:]


def read_bytes(path: str | Path) -> bytes:
    """The whole content of ``path``, decompressed when it is gzip (by content, whatever its name)."""
    path = Path(path)
    problem = file_problem(path)
    if problem is not None:
        raise DataError(problem)
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
        return drop_bom(data.decode("utf-8"), name)
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
    problem = file_problem(path)
    if problem is not None:
        raise DataError(problem)
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
        if line_number == 1:
            line = drop_bom(line, name)
        yield line_number, line


def iter_file_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Stream ``(line_number, text)`` from a plain or ``.gz`` file; errors name the file and line."""
    try:
        with open_binary(path) as stream:
            yield from iter_lines(stream, str(path))
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path} could not be read (truncated or corrupt gzip?): {exc}") from exc


CHUNK_BYTES = 1 << 22  # what a streaming reader decodes at once: large enough to cost little per line


def stream_line_blocks(path: str | Path, on_data: Callable[[bytes], Any] | None = None,
                       on_progress: Callable[[int], Any] | None = None) -> Iterator[tuple[int, list[str]]]:
    """Stream a plain or gzip UTF-8 file as blocks ``(number of the block's first line, lines)``.

    Only one block (about :data:`CHUNK_BYTES` of text) is held at a time, so files of any
    size can be read. Lines lose their newline (``\\n`` or ``\\r\\n``), as in
    :func:`split_lines`. ``on_data`` receives every decompressed byte in order (to hash the
    content as it streams); ``on_progress`` receives how many bytes of the file on disk were
    consumed since its last call. Invalid UTF-8 raises DataError naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    try:
        with path.open("rb") as raw:
            is_gzip = raw.read(2) == GZIP_MAGIC
            raw.seek(0)
            stream: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb") if is_gzip else raw  # type: ignore[assignment]
            yield from _line_blocks(stream, raw, str(path), on_data, on_progress)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path} could not be read (truncated or corrupt gzip?): {exc}") from exc


def _line_blocks(stream: BinaryIO, raw: BinaryIO, name: str, on_data: Callable[[bytes], Any] | None,
                 on_progress: Callable[[int], Any] | None) -> Iterator[tuple[int, list[str]]]:
    first_line, rest, position = 1, b"", 0
    while True:
        chunk = stream.read(CHUNK_BYTES)
        if on_data is not None and chunk:
            on_data(chunk)
        if on_progress is not None:
            now = raw.tell()
            on_progress(now - position)
            position = now
        data = rest + chunk
        cut = data.rfind(b"\n") + 1 if chunk else len(data)  # keep a partial last line for the next chunk
        rest, data = data[cut:], data[:cut]
        if data:
            text = _decode_block(data, name, first_line)
            lines = split_lines(drop_bom(text, name) if first_line == 1 else text)
            yield first_line, lines
            first_line += len(lines)
        if not chunk:
            return


def _decode_block(data: bytes, name: str, first_line: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_number = first_line + data.count(b"\n", 0, exc.start)
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError(f"{name}, line {line_number}: invalid UTF-8 ({exc.reason} at byte {column} "
                        f"of the line); re-encode the file as UTF-8, e.g. with iconv") from None
