"""The streaming ``seq2seq translate`` command: stdin or a file in, one line (or ``nbest`` lines) out per input line.

Translation itself is the :class:`~seq2seq.translator.Translator`'s; this module reads the
input, writes the output (:func:`format_translation`), plots attention and runs the
interactive prompt.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from .config import DecodeConfig
from .errors import ConfigError
from .ids import EOS_ID
from .logs import count_lines, progress
from .plots import plot_attention, require_matplotlib
from .rescoring import Rescorer
from .textio import iter_file_lines, iter_lines
from .writing import atomic_output
from .translator import CHUNK_LINES, TranslatedLine, Translation, Translator

__all__ = ["TranslatedLine", "Translation", "Translator", "check_can_plot_attention", "format_translation",
           "translate_and_rerank", "translate_command", "write_attention_plot"]

logger = logging.getLogger(__name__)

PROMPT = "> "


def format_translation(line: TranslatedLine, nbest: int) -> list[str]:
    """The output lines of one input line.

    With ``nbest`` 1: the best translation. With ``nbest`` N > 1: exactly N lines
    ``score<TAB>translation``, best first; when fewer than N hypotheses exist (a tiny
    search space) the rest read ``-inf<TAB>``. An empty input line has one hypothesis,
    the empty translation, with score 0.
    """
    if nbest == 1:
        return [line.best]
    rows = [f"{t.score:.4f}\t{t.text}" for t in line.nbest[:nbest]]
    return rows + ["-inf\t"] * (nbest - len(rows))


def translate_command(*, checkpoint: str | list[str] | None, input_path: str | None, output_path: str | None,
                      decode_overrides: dict[str, Any], device: str, attention_plot: str | None,
                      model: str | None = None, rescore: list[str] | None = None, rescore_weight: float = 0.5) -> None:
    """``seq2seq translate``: stdin or a file to stdout or a file, one line (or nbest lines) per input line.

    The model comes from ``checkpoint`` (one .pt file, or several decoded as an ensemble) or
    ``model`` (an exported folder or hub id); ``rescore`` checkpoints rerank its beam (:mod:`.rescoring`).
    """
    if model is not None:
        translator = Translator.from_pretrained(model, device)
        checkpoints = [model]
    else:
        checkpoints = [checkpoint] if isinstance(checkpoint, str) else list(checkpoint or [])
        translator = Translator.from_checkpoints(checkpoints, device)
    options = translator.decode_options(decode_overrides)
    rescorer = Rescorer.from_checkpoints(rescore, rescore_weight, device) if rescore else None
    if attention_plot:
        check_can_plot_attention(translator, ", ".join(checkpoints))
    if input_path is None and output_path is None and sys.stdin.isatty():
        _interactive(translator, options, attention_plot, rescorer)
        return
    if input_path is None:
        lines: Iterable[tuple[int, str]] = iter_lines(sys.stdin, "<stdin>")
    else:
        lines = iter_file_lines(input_path)
    name = input_path or "<stdin>"
    translated = translate_and_rerank(translator, rescorer, lines, options, bool(attention_plot), name)
    if output_path is None:
        _write_lines(translated, sys.stdout, options.nbest, translator, attention_plot)
        return
    with atomic_output(output_path) as handle:
        total = _line_count(input_path)
        _write_lines(progress(translated, desc="translate", unit="lines", total=total), handle, options.nbest,
                     translator, attention_plot)
    logger.info("wrote %s", output_path)


def translate_and_rerank(translator: Translator, rescorer: Rescorer | None, lines: Iterable[tuple[int, str]],
                         options: DecodeConfig, return_attention: bool = False, name: str = "<input>",
                         chunk_lines: int = CHUNK_LINES) -> Iterator[TranslatedLine]:
    """``translator.translate_lines``, its n-best lists reranked by ``rescorer`` when there is one."""
    if rescorer is None:
        return translator.translate_lines(lines, options, return_attention=return_attention,
                                          chunk_lines=chunk_lines, name=name)
    translated = translator.translate_lines(lines, rescorer.search_options(options), return_attention=return_attention,
                                            chunk_lines=chunk_lines, name=name)
    return rescorer.rerank(translated, options, chunk_lines=chunk_lines)


def _line_count(path: str | None) -> int | None:
    """Lines of the input file, for the time left in the progress lines (None for stdin or an unreadable file)."""
    try:
        return count_lines(path) if path else None
    except (OSError, EOFError):
        return None  # reading it properly reports the problem, with the file's name


def _write_lines(translated: Iterable[TranslatedLine], handle: TextIO, nbest: int, translator: Translator,
                 attention_plot: str | None) -> None:
    for line in translated:
        handle.write("".join(row + "\n" for row in format_translation(line, nbest)))
        if attention_plot:
            write_attention_plot(translator, line, attention_plot)
    handle.flush()


def _interactive(translator: Translator, options: DecodeConfig, attention_plot: str | None,
                 rescorer: Rescorer | None) -> None:
    """A prompt on a terminal: each line is translated as soon as it is entered (Ctrl-D ends)."""
    print("Type a sentence and press Enter; Ctrl-D to quit.", file=sys.stderr)

    def prompted() -> Iterator[tuple[int, str]]:
        lines = iter_lines(sys.stdin, "<stdin>")
        while True:
            print(PROMPT, end="", file=sys.stderr, flush=True)
            item = next(lines, None)
            if item is None:
                print(file=sys.stderr)
                return
            yield item

    translated = translate_and_rerank(translator, rescorer, prompted(), options, bool(attention_plot), "<stdin>",
                                      chunk_lines=1)
    _write_lines(translated, sys.stdout, options.nbest, translator, attention_plot)


def check_can_plot_attention(translator: Translator, checkpoint: str | Path) -> None:
    """Fail before any translating when --attention-plot cannot work: no attention, or no matplotlib."""
    if not translator.has_attention:
        raise ConfigError(f"--attention-plot: the model in {checkpoint} has model.attention=none, so there "
                          f"are no attention weights to plot; drop the option or use a model with attention")
    require_matplotlib()


def write_attention_plot(translator: Translator, line: TranslatedLine, directory: str | Path) -> Path | None:
    """One PNG per input line, ``DIR/line-000042.png``: output pieces (rows) by source pieces (columns)."""
    best = line.nbest[0] if line.nbest else None
    if best is None or best.attention is None:
        return None
    src_pieces = translator.tokenizer.src_pieces(line.src_text)[:len(line.src_ids)]
    tgt_pieces = translator.tokenizer.tgt_pieces([*best.tgt_ids, EOS_ID])
    path = Path(directory) / f"line-{line.number:06d}.png"
    return plot_attention(best.attention, src_pieces, tgt_pieces, path, title=f"line {line.number}")
