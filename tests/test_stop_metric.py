"""train.stop_metric (bleu | chrf | loss) picks best.pt, early stopping and the plateau; train.keep_best keeps N."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

import seq2seq.training.loop as loop_module
from seq2seq.checkpoint import load_checkpoint
from seq2seq.config import Config, config_from_dict, replace_config
from seq2seq.training import train
from seq2seq.training.kept import best_kept, kept_path
from seq2seq.training.validation import Validation

from digits import write_digit_pairs  # tests/digits.py

# Scripted dev scores by step: the loss is best at step 4 while BLEU and chrF keep rising.
LOSS = {2: 3.0, 4: 2.0, 6: 2.5, 8: 2.6, 10: 2.7, 12: 2.8}
BLEU = {step: float(step) for step in LOSS}


@pytest.fixture(autouse=True)
def scripted_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    def validate(model: Any, objective: Any, dev: Any, tokenizer: Any, cfg: Any, amp: Any, device: Any,
                 step: int = 0) -> Validation:
        return Validation(step=step, loss=LOSS[step], ppl=math.exp(LOSS[step]), bleu=BLEU[step], chrf=2 * BLEU[step])

    monkeypatch.setattr(loop_module, "validate", validate)


def digits_config(tmp_path: Path, **train_section: Any) -> Config:
    pairs = write_digit_pairs(tmp_path / "pairs.tsv", count=40, seed=1)
    section = {"device": "cpu", "batch_size": 40, "lr": 0.01, "scheduler": "constant", "max_steps": 12,
               "validate_every": 2, "log_every": 1, "patience": 2, "amp": "off", "keep_last": 10, **train_section}
    return config_from_dict({
        "data": {"format": "tsv", "train": str(pairs), "dev": str(pairs), "cache_dir": str(tmp_path / "cache")},
        "tokenizer": {"vocab_size": 64},
        "model": {"embedding_size": 8, "hidden_size": 8, "num_layers": 1, "decoder_hidden_size": 16},
        "train": section})


def same_weights(first: Path, second: Path) -> bool:
    a, b = load_checkpoint(first)["model"], load_checkpoint(second)["model"]
    return all(torch.equal(a[name], b[name]) for name in a)


def test_stop_metric_loss_stops_early_and_keeps_the_lowest_loss_as_best(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = train(digits_config(tmp_path, stop_metric="loss", keep_best=2), run_dir)
    assert result.stop_reason == "patience" and result.steps == 8  # 2.5 and 2.6 do not beat 2.0
    assert same_weights(run_dir / "best.pt", kept_path(run_dir, 4))
    index = best_kept(run_dir)
    assert [(entry["step"], entry["value"]) for entry in index] == [(4, 2.0), (6, 2.5)]
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("best-*.pt")) == ["best-00000004.pt",
                                                                                  "best-00000006.pt"]
    assert same_weights(run_dir / "checkpoints" / "best-00000006.pt", kept_path(run_dir, 6))


def test_stop_metric_bleu_keeps_training_while_bleu_rises(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = train(digits_config(tmp_path, stop_metric="bleu", keep_best=2), run_dir)
    assert result.stop_reason == "max_steps" and result.steps == 12
    assert same_weights(run_dir / "best.pt", kept_path(run_dir, 12))
    assert [entry["step"] for entry in best_kept(run_dir)] == [12, 10]


def test_keep_best_index_survives_a_resume(tmp_path: Path) -> None:
    cfg = digits_config(tmp_path, stop_metric="chrf", keep_best=3, patience=0)
    train(replace_config(cfg, "train", max_steps=6), tmp_path / "run")
    assert [entry["step"] for entry in best_kept(tmp_path / "run")] == [6, 4, 2]
    train(cfg, tmp_path / "run", resume=True)
    assert [entry["step"] for entry in best_kept(tmp_path / "run")] == [12, 10, 8]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("best-*.pt")) == [
        "best-00000008.pt", "best-00000010.pt", "best-00000012.pt"]


def test_stop_metric_drives_the_plateau_schedule(tmp_path: Path) -> None:
    cfg = digits_config(tmp_path, stop_metric="loss", scheduler="plateau", plateau_patience=1, plateau_factor=0.5,
                        patience=0, max_steps=8)
    train(cfg, tmp_path / "run")
    plateau = load_checkpoint(tmp_path / "run" / "last.pt")["train_state"]["plateau"]
    assert plateau["scale"] == 0.25  # halved after step 6 and after step 8, where the loss did not fall
    assert plateau["best_bleu"] == -2.0  # the best score: minus the lowest loss
