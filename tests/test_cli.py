"""`seq2seq translate / evaluate / score` end to end, each in a subprocess as a user would run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_translate import MAX_SOURCE_TOKENS, build_tiny_checkpoint

SOURCE = ["ein Hund läuft im Park .", "", "die Frau lächelt ."]
LONG_LINE = " ".join(["zwei Kinder spielen im Garten ."] * 5)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, small_tokenizer) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("cli") / "tiny.pt", small_tokenizer)


def run_cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seq2seq", *args], input=stdin, capture_output=True, timeout=120)


def test_translate_stdin_to_stdout_keeps_lines_and_warns_about_an_over_long_one(checkpoint: Path, small_tokenizer):
    assert len(small_tokenizer.encode_src(LONG_LINE)) > MAX_SOURCE_TOKENS
    lines = [*SOURCE, LONG_LINE, ""]
    result = run_cli("translate", "-c", str(checkpoint), "--beam-size", "2",
                     stdin=("\n".join(lines) + "\n").encode())
    assert result.returncode == 0, result.stderr.decode()
    output = result.stdout.decode().split("\n")
    assert output[-1] == "" and len(output[:-1]) == len(lines)
    assert output[1] == "" and output[4] == ""
    stderr = result.stderr.decode()
    assert "<stdin>, line 4" in stderr and "truncat" in stderr
    assert "line 1:" not in stderr


def test_translate_file_to_file_with_nbest_and_attention_plots(checkpoint: Path, tmp_path: Path):
    src, out, plots = tmp_path / "in.de", tmp_path / "out.en", tmp_path / "plots"
    src.write_text("\n".join(SOURCE) + "\n", encoding="utf-8")
    result = run_cli("translate", "-c", str(checkpoint), "-i", str(src), "-o", str(out), "--beam-size", "3",
                     "--nbest", "2", "--attention-plot", str(plots))
    assert result.returncode == 0, result.stderr.decode()
    rows = out.read_text(encoding="utf-8").split("\n")[:-1]
    assert len(rows) == 2 * len(SOURCE)
    scores = [float(row.split("\t")[0]) for row in rows]
    assert scores[0] >= scores[1] and scores[4] >= scores[5]
    assert rows[2:4] == ["0.0000\t", "-inf\t"]  # an empty line has one hypothesis: the empty translation
    assert sorted(p.name for p in plots.iterdir()) == ["line-000001.png", "line-000003.png"]


def test_invalid_utf8_is_an_error_naming_the_line_and_leaves_no_output(checkpoint: Path, tmp_path: Path):
    src, out = tmp_path / "bad.de", tmp_path / "out.en"
    src.write_bytes(b"ein Hund .\ndie Frau .\nein \xff Fehler .\n")
    result = run_cli("translate", "-c", str(checkpoint), "-i", str(src), "-o", str(out))
    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert "bad.de, line 3" in stderr and "UTF-8" in stderr and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == [src]


def test_search_precision_flag(checkpoint: Path, tmp_path: Path):
    src, out = tmp_path / "in.de", tmp_path / "out.en"
    src.write_text("\n".join(SOURCE) + "\n", encoding="utf-8")
    result = run_cli("translate", "-c", str(checkpoint), "-i", str(src), "-o", str(out), "--amp", "bf16")
    assert result.returncode == 0, result.stderr.decode()
    assert len(out.read_text(encoding="utf-8").split("\n")[:-1]) == len(SOURCE)
    if not torch.cuda.is_available():
        refused = run_cli("translate", "-c", str(checkpoint), "--amp", "fp16", stdin=b"ein Hund .\n")
        assert refused.returncode == 2
        assert "decode.amp=fp16 needs a CUDA GPU" in refused.stderr.decode()
        assert "Traceback" not in refused.stderr.decode()


def test_missing_and_corrupt_checkpoints_are_clear_errors(checkpoint: Path, tmp_path: Path):
    missing = run_cli("translate", "-c", str(tmp_path / "nope.pt"), stdin=b"ein Hund .\n")
    assert missing.returncode == 2 and "checkpoint not found" in missing.stderr.decode()
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(checkpoint.read_bytes()[:2000])
    result = run_cli("translate", "-c", str(corrupt), stdin=b"ein Hund .\n")
    assert result.returncode == 2
    assert "corrupt.pt" in result.stderr.decode() and "Traceback" not in result.stderr.decode()


def test_evaluate_and_score_print_json_and_reject_misaligned_files(checkpoint: Path, tmp_path: Path):
    src, ref, hyp = tmp_path / "src.de", tmp_path / "ref.en", tmp_path / "hyp.en"
    src.write_text("ein Hund läuft im Park .\ndie Frau lächelt .\n", encoding="utf-8")
    ref.write_text("a dog runs in the park .\nthe woman smiles .\n", encoding="utf-8")
    result = run_cli("evaluate", "-c", str(checkpoint), "--src", str(src), "--ref", str(ref), "--json",
                     "--beam-size", "1", "-o", str(hyp))
    assert result.returncode == 0, result.stderr.decode()
    evaluated = json.loads(result.stdout)
    assert 0.0 <= evaluated["bleu"] <= 100.0 and "tok:13a" in evaluated["bleu_signature"]
    scored = run_cli("score", "--hyp", str(hyp), "--ref", str(ref), "--json")
    assert scored.returncode == 0 and json.loads(scored.stdout)["bleu"] == pytest.approx(evaluated["bleu"])
    ref.write_text("only one line\n", encoding="utf-8")
    misaligned = run_cli("score", "--hyp", str(hyp), "--ref", str(ref))
    assert misaligned.returncode == 2
    assert "hyp.en has 2 lines but" in misaligned.stderr.decode() and "ref.en has 1" in misaligned.stderr.decode()
