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
import sys
from typing import Any, TextIO

from .errors import DataError
from .forced import PairScore, format_score
from .ids import EOS_ID
from .metrics import Scores, score_corpus
from .textio import read_lines
from .writing import atomic_output
from .rescoring import Rescorer
from .translate import check_can_plot_attention, format_translation, translate_and_rerank, write_attention_plot
from .translator import Translator

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


def evaluate_command(*, checkpoint: str | list[str], src_path: str, ref_path: str, decode_overrides: dict[str, Any],
                     device: str, as_json: bool, tokenize: str, lowercase: bool, attention_plot: str | None,
                     output_path: str | None, rescore: list[str] | None = None, rescore_weight: float = 0.5) -> None:
    """``seq2seq evaluate``: translate a source file with a checkpoint (several: an ensemble), score it, print.
    ``rescore`` checkpoints rerank the beam (:mod:`.rescoring`)."""
    srcs, refs = read_aligned(src_path, ref_path)
    checkpoints = [checkpoint] if isinstance(checkpoint, str) else list(checkpoint)
    translator = Translator.from_checkpoints(checkpoints, device)
    rescorer = Rescorer.from_checkpoints(rescore, rescore_weight, device) if rescore else None
    options = dataclasses.replace(translator.decode_options(decode_overrides), nbest=1)
    names = ", ".join(checkpoints)
    if attention_plot:
        check_can_plot_attention(translator, names)
    start = time.perf_counter()
    translated = list(translate_and_rerank(translator, rescorer, enumerate(srcs, start=1), options,
                                           bool(attention_plot), src_path))
    elapsed = time.perf_counter() - start
    # With --rescore the time includes the rescorers' forced decoding of every kept hypothesis.
    logger.info("translated %d sentences%s in %.1f s (%.1f sentences/s, beam %d)", len(srcs),
                f" and reranked with {len(rescore)} model(s)" if rescore else "", elapsed,
                len(srcs) / max(elapsed, 1e-9), options.beam_size)
    hyps = [line.best for line in translated]
    if output_path:
        with atomic_output(output_path) as handle:
            handle.writelines(format_translation(line, 1)[0] + "\n" for line in translated)
    if attention_plot:
        for line in translated:
            write_attention_plot(translator, line, attention_plot)
    scores = score_corpus(hyps, refs, tokenize=tokenize, lowercase=lowercase)
    rescoring = {"rescore": ", ".join(rescore), "rescore_weight": rescore_weight} if rescore else {}
    _print_scores(scores, as_json, {"checkpoint": names, **rescoring, "src": src_path, "ref": ref_path,
                                    "decode": dataclasses.asdict(options),
                                    "sentences_per_second": round(len(srcs) / max(elapsed, 1e-9), 2)})


def _print_scores(scores: Scores, as_json: bool, context: dict[str, Any]) -> None:
    if as_json:
        print(json.dumps({**scores.to_dict(), **context}, ensure_ascii=False))
    else:
        print("\n".join(scores.report_lines()))


def logprob_command(*, checkpoints: list[str], src_path: str, tgt_path: str, output_path: str | None, device: str,
                    tokens: bool, as_json: bool, batch_size: int | None) -> None:
    """``seq2seq logprob``: forced decoding, one line per pair: ``sum<TAB>mean`` log-probability of the target
    (natural log, EOS included), and each piece's with ``tokens``; one JSON object per pair with ``as_json``."""
    sources, targets = read_aligned(src_path, tgt_path)
    translator = Translator.from_checkpoints(checkpoints, device)
    scores = translator.score_pairs(sources, targets, batch_size)
    if output_path is None:
        _write_pair_scores(scores, sys.stdout, translator, tokens, as_json)
        return
    with atomic_output(output_path) as handle:
        _write_pair_scores(scores, handle, translator, tokens, as_json)
    logger.info("wrote %s", output_path)


def _write_pair_scores(scores: list[PairScore], handle: TextIO, translator: Translator, tokens: bool,
                       as_json: bool) -> None:
    for number, score in enumerate(scores, start=1):
        pieces = translator.tokenizer.tgt_pieces([*score.tgt_ids, EOS_ID]) if tokens else None
        if not as_json:
            handle.write(format_score(score, pieces) + "\n")
            continue
        item: dict[str, Any] = {"line": number, "log_prob": score.log_prob, "mean_log_prob": score.mean_log_prob,
                                "num_tokens": score.num_tokens}
        if pieces is not None:
            item["tokens"] = [[piece, value] for piece, value in zip(pieces, score.token_log_probs)]
        handle.write(json.dumps(item, ensure_ascii=False) + "\n")
    handle.flush()
