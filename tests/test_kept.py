"""Saves between validations (train.save_every) and the checkpoints a run keeps (train.keep_last)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import seq2seq.training.loop as loop_module
from seq2seq.training import batching
from seq2seq.checkpoint import load_checkpoint, load_model
from seq2seq.config import Config, config_from_dict
from seq2seq.data import prepare
from seq2seq.training import train
from seq2seq.training.kept import kept_checkpoints

from digits import write_digit_pairs  # tests/digits.py


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_digit_pairs(tmp_path_factory.mktemp("digits") / "pairs.tsv", count=60, seed=1)


def tiny_config(pairs: Path, **train_section: Any) -> Config:
    """Batches of ~10 pairs so that one epoch is several steps; validation only at the end of an epoch."""
    section = {"device": "cpu", "batch_size": 80, "lr": 0.01, "scheduler": "constant", "max_steps": 6,
               "validate_every": 0, "log_every": 1, "patience": 0, "amp": "off", **train_section}
    return config_from_dict({
        "data": {"format": "tsv", "train": str(pairs), "dev": str(pairs), "cache_dir": str(pairs.parent / "cache")},
        "tokenizer": {"vocab_size": 64},
        "model": {"embedding_size": 16, "hidden_size": 16, "num_layers": 1, "decoder_hidden_size": 32,
                  "dropout": 0.2},
        "train": section})


def test_keep_last_keeps_the_latest_saves_as_loadable_weights(pairs: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(tiny_config(pairs, save_every=1, keep_last=2), run_dir)
    kept = kept_checkpoints(run_dir)
    assert [p.name for p in kept] == ["step-00000005.pt", "step-00000006.pt"]
    assert "train_state" not in load_checkpoint(kept[-1])  # weights, config and tokenizer only
    last = load_checkpoint(run_dir / "last.pt")["model"]
    newest = load_model(kept[-1]).model.state_dict()
    assert all(torch.equal(newest[name], last[name]) for name in last)


def test_save_every_lets_a_crashed_run_resume_exactly_from_mid_epoch(pairs: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_config(pairs, save_every=2)
    full = train(cfg, tmp_path / "full")
    assert len(batching.epoch_groups(full_data(cfg), cfg.train, 0, loop_module.DistContext())) > 6

    real_step, calls = loop_module.train_step, {"n": 0}

    def crash_at_step_five(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("the machine went away")  # no handler runs: like kill -9, nothing is saved now
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop_module, "train_step", crash_at_step_five)
    with pytest.raises(RuntimeError, match="went away"):
        train(cfg, tmp_path / "split")
    monkeypatch.setattr(loop_module, "train_step", real_step)
    assert load_checkpoint(tmp_path / "split" / "last.pt")["train_state"]["step"] == 4  # the save at step 4
    resumed = train(cfg, tmp_path / "split", resume=True)
    assert resumed.losses == {step: loss for step, loss in full.losses.items() if step > 4}
    full_weights = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    split_weights = load_checkpoint(tmp_path / "split" / "last.pt")["model"]
    assert all(torch.equal(full_weights[name], split_weights[name]) for name in full_weights)


def full_data(cfg: Config) -> Any:
    return prepare(cfg, verbose=False).train
