"""The ``seq2seq evaluate`` / ``seq2seq score`` commands: translate and score, or score given translations.

Scores come from :mod:`seq2seq.metrics` (sacrebleu). ``--tokenize`` selects BLEU's
tokenizer; ``--lowercase`` makes BLEU and chrF case-insensitive. TER keeps sacrebleu's defaults (its signature says which).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

from .errors import DataError
from .metrics import Scores, score_corpus
from .textio import atomic_output, read_lines
from .translate import Translator, check_can_plot_attention, format_translation, write_attention_plot

logger = logging.getLogger(__name__)


def read_aligned(first_path: str | Path, second_path: str | Path) -> tuple[list[str], list[str]]:
    """The lines of two parallel files (plain or .gz); a count mismatch names both files and counts."""
    first, second = read_lines(first_path), read_lines(second_path)
    if not first and not second:
        raise DataError(f"{first_path} and {second_path} are both empty: nothing to score")
    if len(first) != len(second):
        raise DataError(f"{first_path} has {len(first)} lines but {second_path} has {len(second)}; "
                        f"the files must be aligned line by line")
    return first, second


def score_command(*, hyp_path: str, ref_path: str, as_json: bool, tokenize: str, lowercase: bool) -> None:
    """``seq2seq score``: print the scores of an existing translation."""
    hyps, refs = read_aligned(hyp_path, ref_path)
    scores = score_corpus(hyps, refs, tokenize=tokenize, lowercase=lowercase)
    _print_scores(scores, as_json, {"hyp": hyp_path, "ref": ref_path})


def evaluate_command(*, checkpoint: str, src_path: str, ref_path: str, decode_overrides: dict[str, Any],
                     device: str, as_json: bool, tokenize: str, lowercase: bool, attention_plot: str | None,
                     output_path: str | None) -> None:
    """``seq2seq evaluate``: translate a source file with a checkpoint, score it against the references, print."""
    srcs, refs = read_aligned(src_path, ref_path)
    translator = Translator.from_checkpoint(checkpoint, device)
    options = dataclasses.replace(translator.decode_options(decode_overrides), nbest=1)
    if attention_plot:
        check_can_plot_attention(translator, checkpoint)
    start = time.perf_counter()
    translated = list(translator.translate_lines(enumerate(srcs, start=1), options,
                                                 return_attention=bool(attention_plot), name=src_path))
    elapsed = time.perf_counter() - start
    logger.info("translated %d sentences in %.1f s (%.1f sentences/s, beam %d)", len(srcs), elapsed,
                len(srcs) / max(elapsed, 1e-9), options.beam_size)
    hyps = [line.best for line in translated]
    if output_path:
        with atomic_output(output_path) as handle:
            handle.writelines(format_translation(line, 1)[0] + "\n" for line in translated)
    if attention_plot:
        for line in translated:
            write_attention_plot(translator, line, attention_plot)
    scores = score_corpus(hyps, refs, tokenize=tokenize, lowercase=lowercase)
    _print_scores(scores, as_json, {"checkpoint": checkpoint, "src": src_path, "ref": ref_path,
                                    "decode": dataclasses.asdict(options),
                                    "sentences_per_second": round(len(srcs) / max(elapsed, 1e-9), 2)})


def _print_scores(scores: Scores, as_json: bool, context: dict[str, Any]) -> None:
    if as_json:
        print(json.dumps({**scores.to_dict(), **context}, ensure_ascii=False))
    else:
        print("\n".join(scores.report_lines()))
