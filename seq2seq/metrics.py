"""Corpus-level scores with sacrebleu (BLEU, chrF, TER): the one path for validation, ``evaluate`` and ``score``.

Scores are computed on detokenized text, as sacrebleu expects, and reported with
sacrebleu's signatures so that figures can be compared across papers and tools.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sacrebleu.metrics import BLEU, CHRF, TER

from .errors import ConfigError, DataError


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
