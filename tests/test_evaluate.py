"""sacrebleu scoring (BLEU, chrF, TER) and the evaluate / score commands, called in-process."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import sacrebleu

from seq2seq.errors import ConfigError, DataError
from seq2seq.evaluate import evaluate_command, read_aligned, score_command
from seq2seq.metrics import score_corpus

HYPS = ["The cat sat on the mat .", "a dog runs in the park", "two children play ."]
REFS = ["the cat sat on the mat .", "a dog runs in the park .", "two kids are playing ."]


def test_identical_text_scores_perfectly():
    scores = score_corpus(REFS, REFS)
    assert scores.bleu == pytest.approx(100.0)
    assert scores.chrf == pytest.approx(100.0)
    assert scores.ter == pytest.approx(0.0)
    assert scores.num_sentences == 3


def test_scores_match_sacrebleu_and_carry_its_signatures():
    scores = score_corpus(HYPS, REFS)
    assert scores.bleu == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
    assert scores.chrf == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)
    assert scores.ter == pytest.approx(sacrebleu.corpus_ter(HYPS, [REFS]).score)
    assert "tok:13a" in scores.bleu_signature and "case:mixed" in scores.bleu_signature
    assert scores.chrf_signature.startswith("nrefs:1") and "tok:tercom" in scores.ter_signature
    assert scores.bleu_details.startswith("BLEU = ")


def test_tokenize_and_lowercase_pass_through_to_sacrebleu():
    cased = score_corpus(HYPS, REFS)
    lowered = score_corpus(HYPS, REFS, lowercase=True)
    assert lowered.bleu > cased.bleu and "case:lc" in lowered.bleu_signature
    assert lowered.chrf > cased.chrf
    assert "tok:none" in score_corpus(HYPS, REFS, tokenize="none").bleu_signature
    with pytest.raises(ConfigError, match="13a"):
        score_corpus(HYPS, REFS, tokenize="moses")


def test_mismatched_line_counts_name_both_files_and_counts(tmp_path: Path):
    hyp, ref = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    hyp.write_text("a\nb\n")
    ref.write_text("a\nb\nc\n")
    with pytest.raises(DataError, match=r"hyp.txt has 2 lines but .*ref.txt has 3"):
        read_aligned(hyp, ref)


def test_score_command_reads_gzip_and_prints_json(tmp_path: Path, capsys):
    hyp, ref = tmp_path / "hyp.txt.gz", tmp_path / "ref.txt"
    hyp.write_bytes(gzip.compress(("\n".join(HYPS) + "\n").encode()))
    ref.write_text("\n".join(REFS) + "\n")
    score_command(hyp_path=str(hyp), ref_path=str(ref), as_json=True, tokenize="13a", lowercase=False)
    printed = json.loads(capsys.readouterr().out)
    assert printed["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
    assert printed["hyp"] == str(hyp) and set(printed) >= {"chrf", "ter", "bleu_signature", "ter_signature"}
    score_command(hyp_path=str(hyp), ref_path=str(ref), as_json=False, tokenize="13a", lowercase=False)
    report = capsys.readouterr().out.splitlines()
    assert report[0].startswith("BLEU = ") and report[1].startswith("chrF2 = ") and report[2].startswith("TER = ")


def test_evaluate_command_translates_scores_and_writes_the_output(tmp_path: Path, capsys, tiny_checkpoint: Path):
    src, ref, out = tmp_path / "src.de", tmp_path / "ref.en", tmp_path / "hyp.en"
    src.write_text("ein Hund läuft im Park .\n\ndie Frau lächelt .\n")
    ref.write_text("a dog runs in the park .\n\nthe woman smiles .\n")
    evaluate_command(checkpoint=str(tiny_checkpoint), src_path=str(src), ref_path=str(ref),
                     decode_overrides={"beam_size": 3}, device="cpu", as_json=True, tokenize="13a",
                     lowercase=False, attention_plot=None, output_path=str(out))
    printed = json.loads(capsys.readouterr().out)
    hyps = out.read_text().split("\n")[:-1]
    assert len(hyps) == 3 and hyps[1] == ""
    assert printed["bleu"] == pytest.approx(score_corpus(hyps, ref.read_text().split("\n")[:-1]).bleu)
    assert printed["decode"]["beam_size"] == 3 and printed["num_sentences"] == 3
