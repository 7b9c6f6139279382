"""Scoring with sacrebleu (BLEU, chrF, TER) and the ``seq2seq evaluate`` / ``seq2seq score`` commands.

Scores are computed on detokenized text, as sacrebleu expects, and reported with
sacrebleu's signatures so that figures can be compared across papers and tools.
``--tokenize`` selects BLEU's tokenizer; ``--lowercase`` makes BLEU and chrF
case-insensitive. TER keeps sacrebleu's defaults (its signature says which).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, DataError
from .textio import read_lines

logger = logging.getLogger(__name__)


@dataclass
class Scores:
    """Corpus-level scores (0-100) with the sacrebleu signature of each metric."""

    bleu: float
    chrf: float
    ter: float
    bleu_signature: str
    chrf_signature: str
    ter_signature: str
    bleu_details: str  # sacrebleu's line: n-gram precisions, brevity penalty, lengths
    num_sentences: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def report_lines(self) -> list[str]:
        """Human-readable: one line per metric, its score and its signature."""
        return [f"{self.bleu_details}  {self.bleu_signature}",
                f"chrF2 = {self.chrf:.2f}  {self.chrf_signature}",
                f"TER = {self.ter:.2f}  {self.ter_signature}"]


def score_corpus(hyps: list[str], refs: list[str], tokenize: str = "13a", lowercase: bool = False) -> Scores:
    """BLEU, chrF and TER of detokenized hypotheses against one reference each (same order, same count)."""
    from sacrebleu.metrics import BLEU, CHRF, TER

    if len(hyps) != len(refs):
        raise DataError(f"{len(hyps)} hypotheses but {len(refs)} references; they must be aligned line by line")
    if not hyps:
        raise DataError("nothing to score: no hypotheses and no references")
    if tokenize not in BLEU.TOKENIZERS:
        raise ConfigError(f"unknown BLEU tokenizer {tokenize!r}; sacrebleu offers {', '.join(BLEU.TOKENIZERS)}")
    bleu = BLEU(tokenize=tokenize, lowercase=lowercase)
    chrf = CHRF(lowercase=lowercase)
    ter = TER()
    bleu_score = bleu.corpus_score(hyps, [refs])
    return Scores(bleu=bleu_score.score, chrf=chrf.corpus_score(hyps, [refs]).score,
                  ter=ter.corpus_score(hyps, [refs]).score, bleu_signature=str(bleu.get_signature()),
                  chrf_signature=str(chrf.get_signature()), ter_signature=str(ter.get_signature()),
                  bleu_details=str(bleu_score), num_sentences=len(hyps))


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
    from .translate import (Translator, atomic_output, check_can_plot_attention, format_translation,
                            write_attention_plot)

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
