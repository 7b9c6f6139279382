"""Faults during training: signals, full disks, concurrent runs, runs killed early, damaged or foreign checkpoints."""

from __future__ import annotations

import dataclasses
import errno
import io
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import seq2seq.training.loop as loop_module
import seq2seq.training.progress as progress_module
import seq2seq.writing as writing
from seq2seq.checkpoint import load_checkpoint, save_checkpoint
from seq2seq.cli import main
from seq2seq.config import Config, config_from_dict, config_to_dict, save_config
from seq2seq.errors import ConfigError, StorageError
from seq2seq.training import train
from seq2seq.training.lock import RunDirectoryInUse


REPO_ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


def config_dict(data_dir: Path, **train: Any) -> dict[str, Any]:
    """A model of a few thousand weights on 40 digit pairs (train = dev); ``train`` overrides TrainConfig fields."""
    pairs = str(data_dir / "pairs.tsv")
    train_section = {"device": "cpu", "batch_size": 300, "lr": 0.01, "scheduler": "constant", "label_smoothing": 0.0,
                     "max_steps": 4, "validate_every": 2, "log_every": 1, "patience": 0, "max_epochs": 1000,
                     "amp": "off", **train}
    return {"data": {"format": "tsv", "train": pairs, "dev": pairs, "cache_dir": str(data_dir / "cache")},
            "tokenizer": {"vocab_size": 64},
            "model": {"embedding_size": 16, "hidden_size": 16, "num_layers": 1, "decoder_hidden_size": 32,
                      "dropout": 0.0},
            "train": train_section}


def digits_config(data_dir: Path, **train: Any) -> Config:
    return config_from_dict(config_dict(data_dir, **train))


def _step_hook(monkeypatch: pytest.MonkeyPatch, at_step: int, action: Any) -> None:
    """Run ``action()`` right after update number ``at_step`` of the next training."""
    real_step = loop_module.train_step
    calls = {"n": 0}

    def step(*args: Any, **kwargs: Any) -> torch.Tensor:
        stats = real_step(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == at_step:
            action()
        return stats

    monkeypatch.setattr(loop_module, "train_step", step)


# -- runs killed early, stale temporaries ----------------------------------------------------------------------------


def test_resuming_a_run_killed_before_its_first_last_pt_starts_it_cleanly(data_dir, tmp_path, caplog) -> None:
    cfg = digits_config(data_dir)
    fresh = train(cfg, tmp_path / "fresh")
    run_dir = tmp_path / "killed"  # what a run killed during its first steps leaves behind
    run_dir.mkdir()
    save_config(cfg, run_dir / "config.yaml")
    (run_dir / "train.log").write_text("training on cpu ...\n", encoding="utf-8")
    (run_dir / ".last.pt.q8x2.tmp").write_bytes(b"PK\x03\x04 half a checkpoint")

    resumed = train(cfg, run_dir, resume=True)
    assert "stopped before its first last.pt" in caplog.text
    assert resumed.steps == fresh.steps == 4 and resumed.losses == fresh.losses
    assert not list(run_dir.glob(".*.tmp"))
    assert load_checkpoint(run_dir / "last.pt")["train_state"]["step"] == 4


# -- signals --------------------------------------------------------------------------------------------------------


def test_sigterm_stops_a_real_training_process_with_exit_143_after_saving(data_dir, tmp_path) -> None:
    config = tmp_path / "digits.yaml"
    config.write_text(yaml.safe_dump(config_dict(data_dir, max_steps=100000, validate_every=0)), encoding="utf-8")
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "seq2seq", "train", str(config), "--run-dir", str(run_dir)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        log = run_dir / "train.log"
        while not (log.is_file() and "| loss " in log.read_text(encoding="utf-8")):
            assert process.poll() is None and time.monotonic() < deadline, "training never logged a step"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 143, stderr.decode()
    assert "interrupted at step" in stderr.decode()
    assert load_checkpoint(run_dir / "last.pt")["train_state"]["step"] >= 1


def test_ctrl_c_stops_training_with_exit_130_after_saving(data_dir, tmp_path, monkeypatch) -> None:
    config = tmp_path / "digits.yaml"
    config.write_text(yaml.safe_dump(config_dict(data_dir, max_steps=50)), encoding="utf-8")
    _step_hook(monkeypatch, 2, lambda: signal.raise_signal(signal.SIGINT))
    assert main(["-q", "train", str(config), "--run-dir", str(tmp_path / "run")]) == 130
    assert load_checkpoint(tmp_path / "run" / "last.pt")["train_state"]["step"] == 2


def test_a_finished_run_exits_0(data_dir, tmp_path) -> None:
    config = tmp_path / "digits.yaml"
    config.write_text(yaml.safe_dump(config_dict(data_dir, max_steps=1, validate_every=0)), encoding="utf-8")
    assert main(["-q", "train", str(config), "--run-dir", str(tmp_path / "run")]) == 0


# -- concurrent runs --------------------------------------------------------------------------------------------------


def test_a_second_training_into_a_locked_run_directory_is_refused_and_writes_nothing(data_dir, held_run_dir) -> None:
    run_dir, holder = held_run_dir
    before = sorted(p.name for p in run_dir.iterdir())
    with pytest.raises(RunDirectoryInUse, match=f"in use by process {holder.pid} on host"):
        train(digits_config(data_dir), run_dir, overwrite=True)
    assert sorted(p.name for p in run_dir.iterdir()) == before


# -- full disk --------------------------------------------------------------------------------------------------------


def test_disk_full_while_saving_a_checkpoint_names_file_cause_and_the_kept_checkpoints(
        data_dir, tmp_path, monkeypatch) -> None:
    run_dir = tmp_path / "run"

    class FullDisk(io.FileIO):
        full = False

        def write(self, data: Any) -> int | None:
            if FullDisk.full:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return super().write(data)

    class RecordingOnFullDisk(writing._RecordingFileIO, FullDisk):
        pass

    monkeypatch.setattr(writing, "_RecordingFileIO", RecordingOnFullDisk)
    _step_hook(monkeypatch, 3, lambda: setattr(FullDisk, "full", True))  # after the checkpoints of step 2
    with pytest.raises(StorageError) as raised:
        train(digits_config(data_dir), run_dir)
    message = str(raised.value)
    assert "No space left on device" in message and "enforce fail" not in message
    assert f"Kept intact: {run_dir / 'last.pt'} (written" in message and "--resume" in message
    assert load_checkpoint(run_dir / "last.pt")["train_state"]["step"] == 2
    assert not list(run_dir.glob(".*.tmp"))

    FullDisk.full = False  # space freed: the run continues
    assert train(digits_config(data_dir), run_dir, resume=True).steps == 4


def test_disk_full_while_logging_names_train_log(data_dir, tmp_path, monkeypatch) -> None:
    real_open = open

    class FullLog(io.TextIOWrapper):
        def write(self, text: str) -> int:
            if "step 2 " in text:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return super().write(text)

    def open_log(path: Any, *args: Any, **kwargs: Any) -> Any:
        handle = real_open(path, *args, **kwargs)
        return FullLog(handle.detach(), encoding="utf-8") if str(path).endswith("train.log") else handle

    monkeypatch.setattr(progress_module, "open", open_log, raising=False)
    with pytest.raises(StorageError, match=f"could not write {tmp_path / 'run' / 'train.log'}: No space left"):
        train(digits_config(data_dir), tmp_path / "run")


# -- validation, damaged and foreign checkpoints ---------------------------------------------------------------------


def test_a_non_finite_dev_loss_is_reported_and_never_becomes_best(data_dir, tmp_path, monkeypatch) -> None:
    real_validate = loop_module.validate
    calls = {"n": 0}

    def diverged_second_time(*args: Any, **kwargs: Any) -> Any:
        result = real_validate(*args, **kwargs)
        calls["n"] += 1
        # a diverged model whose greedy output happens to score well must still not become best.pt
        return dataclasses.replace(result, loss=math.nan, bleu=100.0) if calls["n"] == 2 else result

    monkeypatch.setattr(loop_module, "validate", diverged_second_time)
    run_dir = tmp_path / "run"
    best_before: dict[str, bytes] = {}
    _step_hook(monkeypatch, 3, lambda: best_before.setdefault("best", (run_dir / "best.pt").read_bytes()))
    result = train(digits_config(data_dir), run_dir)
    assert result.best_bleu == result.validations[0].bleu < 100.0
    assert (run_dir / "best.pt").read_bytes() == best_before["best"]
    log = (run_dir / "train.log").read_text(encoding="utf-8")
    assert "validation at step 4: the dev loss is nan (not finite)" in log


def test_a_damaged_best_pt_beside_a_good_last_pt_is_explained(data_dir, tmp_path, caplog, capsys) -> None:
    run_dir = tmp_path / "run"
    train(digits_config(data_dir, max_steps=2), run_dir)
    best = run_dir / "best.pt"
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])

    assert train(digits_config(data_dir, max_steps=4), run_dir, resume=True).steps == 4
    assert f"{best} is damaged" in caplog.text and "resumes from" in caplog.text

    assert main(["-q", "translate", "-c", str(best), "-i", str(data_dir / "pairs.tsv")]) == 2
    assert f"{run_dir / 'last.pt'} beside it" in capsys.readouterr().err


def test_resuming_a_gpu_run_on_a_cpu_only_machine_says_how(data_dir, tmp_path, monkeypatch, caplog) -> None:
    run_dir = tmp_path / "run"
    train(digits_config(data_dir, max_steps=2), run_dir)
    checkpoint = load_checkpoint(run_dir / "last.pt")
    checkpoint["train_state"]["device"] = "cuda"  # as a run on a GPU saves it
    save_checkpoint(checkpoint, run_dir / "last.pt")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    with pytest.raises(ConfigError, match="saved by a run on a CUDA GPU.*--set train.device=cpu"):
        train(digits_config(data_dir, max_steps=4, device="cuda"), run_dir, resume=True)
    assert train(digits_config(data_dir, max_steps=4, device="cpu"), run_dir, resume=True).steps == 4
    assert "saved by a run on a CUDA GPU; it continues on cpu" in caplog.text


def test_the_stored_config_yaml_is_the_run_config(data_dir, tmp_path) -> None:
    """config.yaml is written atomically at every start: it always parses and matches last.pt."""
    run_dir = tmp_path / "run"
    train(digits_config(data_dir, max_steps=2), run_dir)
    stored = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    assert stored == config_to_dict(digits_config(data_dir, max_steps=2))
    assert stored == load_checkpoint(run_dir / "last.pt")["config"]
