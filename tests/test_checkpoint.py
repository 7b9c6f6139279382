"""Checkpoints: weights_only loading, clear errors for damaged files, RNG round trips, run-directory rules."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from seq2seq.checkpoint import build_checkpoint, load_checkpoint, save_checkpoint
from seq2seq.training.run import capture_rng_state, open_run, restore_rng_state, resume_config
from seq2seq.config import Config, config_from_dict
from seq2seq.errors import CheckpointError, ConfigError, Seq2SeqError


def _training_checkpoint() -> dict:
    """A checkpoint shaped like train.py's last.pt: optimizer state, RNG states, nested plain values."""
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam(model.parameters(), fused=True)
    model(torch.ones(2, 4)).sum().backward()
    optimizer.step()
    train_state = {"step": 7, "epoch": 1, "batches_done": 3, "best_bleu": float("-inf"),
                   "plateau": {"scale": 0.5, "best_bleu": 1.0, "bad_validations": 0},
                   "optimizer": optimizer.state_dict(), "scaler": {}, "rng": [capture_rng_state()]}
    tokenizer_state = {"format": "sentencepiece", "joint": True, "src_model": torch.zeros(5, dtype=torch.uint8)}
    return build_checkpoint(Config(), model.state_dict(), tokenizer_state, train_state)


def test_training_checkpoint_loads_with_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(_training_checkpoint(), path)
    raw = torch.load(path, weights_only=True)  # no pickled code: nothing but tensors and plain containers
    assert raw["train_state"]["step"] == 7
    assert load_checkpoint(path)["train_state"]["optimizer"]["param_groups"][0]["fused"] is True
    assert not list(tmp_path.glob(".last.pt.*.tmp"))  # the temporary file was renamed away


def test_truncated_checkpoint_is_a_clear_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(_training_checkpoint(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"last\.pt.*truncated or corrupt"):
        load_checkpoint(path)


def test_garbage_and_foreign_files_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt is not a seq2seq checkpoint"):
        load_checkpoint(foreign)


def test_rng_states_survive_a_checkpoint_round_trip(tmp_path: Path) -> None:
    def draws() -> tuple[list[float], float, float]:
        return torch.rand(3).tolist(), random.random(), float(np.random.rand())

    torch.manual_seed(1)
    random.seed(2)
    np.random.seed(3)
    path = tmp_path / "rng.pt"
    save_checkpoint(build_checkpoint(Config(), {}, {}, {"rng": [capture_rng_state()]}), path)
    expected = draws()
    draws()  # move every generator on
    restore_rng_state(load_checkpoint(path)["train_state"]["rng"][0])
    assert draws() == expected


def test_open_run_refuses_an_existing_run_naming_the_dir_and_both_flags(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("{}\n", encoding="utf-8")
    with pytest.raises(Seq2SeqError, match=f"{tmp_path}.*--resume.*--overwrite"):
        open_run(tmp_path, resume=False, overwrite=False)
    assert open_run(tmp_path, resume=False, overwrite=True) is None
    assert open_run(tmp_path / "fresh", resume=False, overwrite=False) is None
    with pytest.raises(ConfigError, match="pick one"):
        open_run(tmp_path, resume=True, overwrite=True)
    with pytest.raises(CheckpointError, match="no .*last.pt to continue from"):
        open_run(tmp_path / "fresh", resume=True, overwrite=False)


def test_resume_config_keeps_the_stored_run_and_allows_only_stopping_changes(
        caplog: pytest.LogCaptureFixture) -> None:
    stored = config_from_dict({"train": {"max_steps": 100, "lr": 0.001, "keep_last": 5}})
    given = config_from_dict({"train": {"max_steps": 300, "patience": 9, "lr": 0.001}, "decode": {"beam_size": 3}})
    with caplog.at_level("WARNING", logger="seq2seq.training"):
        merged = resume_config(stored, given, "run/last.pt")
    assert (merged.train.max_steps, merged.train.patience, merged.decode.beam_size) == (300, 9, 3)
    assert merged.train.keep_last == 0  # the resume command did not repeat --set train.keep_last=5 ...
    assert "train.keep_last 5 -> 0" in caplog.text and "train.max_steps 100 -> 300" in caplog.text  # ... and is told
    reshaped = config_from_dict({"model": {"hidden_size": 8, "num_layers": 3}, "train": {"max_steps": 100,
                                                                                          "lr": 0.001}})
    with pytest.raises(ConfigError, match=r"run/last.pt.*model.hidden_size.*model.num_layers"):
        resume_config(stored, reshaped, "run/last.pt")
