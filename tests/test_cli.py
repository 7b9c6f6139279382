"""`seq2seq translate / evaluate / score` end to end through ``cli.main``, as a user runs them.

Most cases call ``main([...])`` in this process with stdin swapped for a test double and
stdout/stderr captured: starting a new Python that imports torch costs about a second per
case and checks nothing more. Two cases run the real ``python -m seq2seq`` in a subprocess,
for what only a process shows: the exit status, bytes piped through stdin and stdout,
warnings logged to stderr, and a ``--help`` that answers without importing torch.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from seq2seq.checkpoint import config_of, load_checkpoint
from seq2seq.cli import main

SOURCE = ["ein Hund läuft im Park .", "", "die Frau lächelt ."]
LONG_LINE = " ".join(["zwei Kinder spielen im Garten ."] * 5)


@dataclass(frozen=True)
class Run:
    """What a command returned (its exit status) and printed."""

    status: int
    out: str
    err: str


class _Terminal(io.TextIOWrapper):
    """A stdin that says it is a terminal, for the interactive prompt."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Run]:
    """``cli("translate", "-c", path, stdin=b"...")`` runs ``seq2seq translate -c path`` in this process."""

    def run(*args: str, stdin: bytes = b"", terminal: bool = False) -> Run:
        stream = (_Terminal if terminal else io.TextIOWrapper)(io.BytesIO(stdin), encoding="utf-8")
        monkeypatch.setattr(sys, "stdin", stream)
        capsys.readouterr()  # only this command's output
        status = main(list(args))
        captured = capsys.readouterr()
        return Run(status, captured.out, captured.err)

    return run


def run_process(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], input=stdin, capture_output=True, timeout=120)


def test_translate_stdin_to_stdout_keeps_lines_and_warns_about_an_over_long_one(tiny_checkpoint: Path,
                                                                                small_tokenizer):
    max_length = config_of(load_checkpoint(tiny_checkpoint), tiny_checkpoint).data.max_length
    assert len(small_tokenizer.encode_src(LONG_LINE)) > max_length
    lines = [*SOURCE, LONG_LINE, ""]
    result = run_process("-m", "seq2seq", "translate", "-c", str(tiny_checkpoint), "--beam-size", "2",
                         stdin=("\n".join(lines) + "\n").encode())
    assert result.returncode == 0, result.stderr.decode()
    output = result.stdout.decode().split("\n")
    assert output[-1] == "" and len(output[:-1]) == len(lines)
    assert output[1] == "" and output[4] == ""
    stderr = result.stderr.decode()
    assert "<stdin>, line 4" in stderr and "truncat" in stderr
    assert "line 1:" not in stderr


def test_help_answers_without_torch_and_a_bad_argument_exits_2():
    helped = run_process("-X", "importtime", "-m", "seq2seq", "--help")
    assert helped.returncode == 0, helped.stderr.decode()
    usage = helped.stdout.decode()
    for command in ("prepare", "train", "translate", "evaluate", "score", "inspect"):
        assert command in usage
    imported = {line.split("|")[-1].strip() for line in helped.stderr.decode().splitlines() if "|" in line}
    assert "seq2seq.cli" in imported and "torch" not in imported
    refused = run_process("-m", "seq2seq", "translate", "--beam-size", "two")
    assert refused.returncode == 2 and "--beam-size" in refused.stderr.decode()


def test_translate_file_to_file_with_nbest_and_attention_plots(cli, tiny_checkpoint: Path, tmp_path: Path):
    src, out, plots = tmp_path / "in.de", tmp_path / "out.en", tmp_path / "plots"
    src.write_text("\n".join(SOURCE) + "\n", encoding="utf-8")
    result = cli("translate", "-c", str(tiny_checkpoint), "-i", str(src), "-o", str(out), "--beam-size", "3",
                 "--nbest", "2", "--attention-plot", str(plots))
    assert result.status == 0, result.err
    assert result.out == ""  # everything went to the file
    rows = out.read_text(encoding="utf-8").split("\n")[:-1]
    assert len(rows) == 2 * len(SOURCE)
    scores = [float(row.split("\t")[0]) for row in rows]
    assert scores[0] >= scores[1] and scores[4] >= scores[5]
    assert rows[2:4] == ["0.0000\t", "-inf\t"]  # an empty line has one hypothesis: the empty translation
    assert sorted(p.name for p in plots.iterdir()) == ["line-000001.png", "line-000003.png"]


def test_translate_on_a_terminal_prompts_and_translates_each_line(cli, tiny_checkpoint: Path):
    result = cli("translate", "-c", str(tiny_checkpoint), stdin="\n".join(SOURCE).encode(), terminal=True)
    assert result.status == 0, result.err
    assert len(result.out.split("\n")[:-1]) == len(SOURCE)
    assert "Ctrl-D" in result.err and result.err.count("> ") == len(SOURCE) + 1  # one prompt per line, then EOF


def test_invalid_utf8_is_an_error_naming_the_line_and_leaves_no_output(cli, tiny_checkpoint: Path, tmp_path: Path):
    src, out = tmp_path / "bad.de", tmp_path / "out.en"
    src.write_bytes(b"ein Hund .\ndie Frau .\nein \xff Fehler .\n")
    result = cli("translate", "-c", str(tiny_checkpoint), "-i", str(src), "-o", str(out))
    assert result.status == 2
    assert "bad.de, line 3" in result.err and "UTF-8" in result.err and "Traceback" not in result.err
    assert list(tmp_path.iterdir()) == [src]


def test_search_precision_flag(cli, tiny_checkpoint: Path, tmp_path: Path):
    src, out = tmp_path / "in.de", tmp_path / "out.en"
    src.write_text("\n".join(SOURCE) + "\n", encoding="utf-8")
    result = cli("translate", "-c", str(tiny_checkpoint), "-i", str(src), "-o", str(out), "--amp", "bf16")
    assert result.status == 0, result.err
    assert len(out.read_text(encoding="utf-8").split("\n")[:-1]) == len(SOURCE)
    if not torch.cuda.is_available():
        refused = cli("translate", "-c", str(tiny_checkpoint), "--amp", "fp16", stdin=b"ein Hund .\n")
        assert refused.status == 2
        assert "decode.amp=fp16 needs a CUDA GPU" in refused.err and "Traceback" not in refused.err
        assert refused.out == ""


def test_missing_and_corrupt_checkpoints_are_clear_errors(cli, tiny_checkpoint: Path, tmp_path: Path):
    missing = cli("translate", "-c", str(tmp_path / "nope.pt"), stdin=b"ein Hund .\n")
    assert missing.status == 2 and "checkpoint not found" in missing.err
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(tiny_checkpoint.read_bytes()[:2000])
    result = cli("translate", "-c", str(corrupt), stdin=b"ein Hund .\n")
    assert result.status == 2
    assert "corrupt.pt" in result.err and "Traceback" not in result.err


def test_evaluate_and_score_print_json_and_reject_misaligned_files(cli, tiny_checkpoint: Path, tmp_path: Path):
    src, ref, hyp = tmp_path / "src.de", tmp_path / "ref.en", tmp_path / "hyp.en"
    src.write_text("ein Hund läuft im Park .\ndie Frau lächelt .\n", encoding="utf-8")
    ref.write_text("a dog runs in the park .\nthe woman smiles .\n", encoding="utf-8")
    result = cli("evaluate", "-c", str(tiny_checkpoint), "--src", str(src), "--ref", str(ref), "--json",
                 "--beam-size", "1", "-o", str(hyp))
    assert result.status == 0, result.err
    evaluated = json.loads(result.out)
    assert 0.0 <= evaluated["bleu"] <= 100.0 and "tok:13a" in evaluated["bleu_signature"]
    scored = cli("score", "--hyp", str(hyp), "--ref", str(ref), "--json")
    assert scored.status == 0 and json.loads(scored.out)["bleu"] == pytest.approx(evaluated["bleu"])
    ref.write_text("only one line\n", encoding="utf-8")
    misaligned = cli("score", "--hyp", str(hyp), "--ref", str(ref))
    assert misaligned.status == 2
    assert "hyp.en has 2 lines but" in misaligned.err and "ref.en has 1" in misaligned.err
