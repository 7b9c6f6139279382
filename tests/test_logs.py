"""What training and translation write to stderr, train.log and TensorBoard."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from seq2seq.config import load_config
from seq2seq.logs import count_lines, format_duration, progress, rate_and_eta
from seq2seq.training import progress as progress_module
from seq2seq.training import train

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")


class FakeWriter:
    """Records what the Reporter hands to TensorBoard's SummaryWriter."""

    def __init__(self) -> None:
        self.scalars: dict[str, list[tuple[int, float]]] = {}
        self.texts: dict[str, list[tuple[int, str]]] = {}

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.setdefault(tag, []).append((step, value))

    def add_text(self, tag: str, text: str, step: int) -> None:
        self.texts.setdefault(tag, []).append((step, text))

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, FakeWriter]:
    """tiny.yaml to the end of its 2 epochs, label smoothing on, a log line every 5 steps, a fake TensorBoard."""
    writer = FakeWriter()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(progress_module, "_tensorboard_writer", lambda run_dir: writer)
        # 14 steps an epoch: a log line every 5 steps leaves the last one (step 28) for the flush after the epoch ends.
        cfg = load_config("tiny", ["train.log_every=5", "train.label_smoothing=0.1"])
        run_dir = tmp_path_factory.mktemp("logged")
        result = train(cfg, run_dir, command="seq2seq train tiny --set train.log_every=5")
    return result, run_dir, writer


def test_training_lines_name_the_smoothed_loss_the_nll_and_ppl_as_exp_nll(logged_run):
    result, run_dir, _ = logged_run
    lines = [line for line in (run_dir / "train.log").read_text(encoding="utf-8").splitlines()
             if re.search(r" step \d+ of ", line)]
    assert lines
    for line in lines:
        smoothed, nll, ppl = (float(re.search(pattern, line).group(1)) for pattern in
                              (r"loss \(smoothed\) ([\d.]+)", r"\| nll ([\d.]+)", r"ppl = exp\(nll\) ([\d.]+)"))
        assert ppl == pytest.approx(2.718281828 ** nll, rel=2e-3, abs=0.01)
        assert smoothed > nll  # label smoothing 0.1 adds the cross-entropy against the uniform part
        assert re.search(r"grad norm [\d.]+ \|", line) and re.search(r"steps/s, \S+ left$", line)


def test_epochs_are_counted_from_one_and_never_past_max_epochs(logged_run):
    result, run_dir, _ = logged_run
    text = (run_dir / "train.log").read_text(encoding="utf-8")
    epochs = [(int(step), int(epoch), int(total)) for step, epoch, total in
              re.findall(r"step (\d+) of \d+ \| epoch (\d+) of (\d+)", text)]
    assert result.epochs == 2 and result.stop_reason == "max_epochs"
    assert all(1 <= epoch <= total == 2 for _, epoch, total in epochs)
    steps_per_epoch = result.steps // 2
    for step, epoch, _ in epochs:
        assert epoch == -(-step // steps_per_epoch)  # the epoch that step belongs to
    assert epochs[-1][0] == result.steps and epochs[-1][1] == 2  # the line after the last validation
    assert f"after {result.steps} steps (2 full epochs, " in text


def test_tensorboard_gets_labelled_losses_grad_norm_config_and_dev_translations(logged_run):
    result, _, writer = logged_run
    assert {"train/loss_smoothed", "train/nll", "train/ppl", "train/grad_norm", "train/lr",
            "dev/nll", "dev/ppl", "dev/bleu", "dev/chrf"} <= set(writer.scalars)
    assert all(value > 0 for _, value in writer.scalars["train/grad_norm"])
    ((_, config_text),) = writer.texts["config"]
    assert "synthetic_seed: 7" in config_text
    samples = writer.texts["dev/translations"]
    assert [step for step, _ in samples] == [v.step for v in result.validations]
    first = samples[0][1].splitlines()
    assert first[0] == "| source | reference | greedy translation |" and len(first) == 2 + 3


def test_the_command_goes_into_train_log(logged_run):
    _, run_dir, _ = logged_run
    assert "command: seq2seq train tiny --set train.log_every=5" in (run_dir / "train.log").read_text()


def test_progress_off_a_terminal_is_plain_lines_with_rate_and_time_left(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="seq2seq")
    assert not sys.stderr.isatty()  # pytest captures stderr
    assert list(progress(range(4), desc="demo", unit="lines", total=4, interval=0.0)) == [0, 1, 2, 3]
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0].startswith("demo: 1 of 4 lines | ") and messages[0].endswith(" left")
    assert messages[-1].startswith("demo: 4 lines in ")
    assert not any("\r" in message for message in messages)


def test_rate_eta_and_durations():
    assert format_duration(9) == "9s" and format_duration(75) == "1m15s" and format_duration(3725) == "1h02m"
    assert rate_and_eta(50, 10.0, 200, "lines") == "5.0 lines/s, 30s left"
    assert rate_and_eta(5000, 10.0, None, "lines") == "500 lines/s"


def test_count_lines_plain_and_gzip(tmp_path: Path):
    import gzip

    (tmp_path / "a.txt").write_bytes(b"one\ntwo\nthree")
    with gzip.open(tmp_path / "b.txt.gz", "wb") as handle:
        handle.write(b"one\ntwo\n")
    assert count_lines(tmp_path / "a.txt") == 3 and count_lines(tmp_path / "b.txt.gz") == 2


def test_translate_to_a_file_stamps_stderr_lines_and_writes_no_bar_frames(logged_run, tmp_path: Path):
    _, run_dir, _ = logged_run
    src = tmp_path / "in.txt"
    src.write_text("la navo fela amat.\n" * 30, encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "seq2seq", "translate", "-c", str(run_dir / "best.pt"), "-i",
                           str(src), "-o", str(tmp_path / "out.txt")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert "\r" not in done.stderr
    assert lines and all(STAMP.match(line) for line in lines), lines
    assert sum("parameters" in line for line in lines) == 1
    assert re.search(r"translate: 30 lines in \S+ \| [\d.,]+ lines/s", done.stderr)


def test_training_logs_the_parameter_count_once(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO)
    train(load_config("tiny", ["train.max_steps=2"]), tmp_path / "run")
    assert sum("parameters" in record.getMessage() for record in caplog.records) == 1
