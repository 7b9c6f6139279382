"""Fine-tuning (train.init_from / --init-from): the checkpoint's weights and tokenizer, fresh optimizer and steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import seq2seq.training.loop as loop_module
from seq2seq.training import batching
from seq2seq.checkpoint import load_checkpoint
from seq2seq.cli import main
from seq2seq.config import Config, config_from_dict, replace_config
from seq2seq.data import Tokenizer, prepare
from seq2seq.errors import CheckpointError
from seq2seq.training import train
from seq2seq.training.loss import Objective

from digits import write_digit_pairs  # tests/digits.py


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


def digits_config(pairs: Path, vocab_size: int = 64, **train_section: Any) -> Config:
    """No dropout and no label smoothing, so that the first step's loss is the model's plain NLL."""
    section = {"device": "cpu", "batch_size": 80, "lr": 0.01, "scheduler": "constant", "max_steps": 30,
               "validate_every": 0, "log_every": 1, "patience": 0, "amp": "off", "label_smoothing": 0.0,
               **train_section}
    return config_from_dict({
        "data": {"format": "tsv", "train": str(pairs), "cache_dir": str(pairs.parent / "cache")},
        "tokenizer": {"vocab_size": vocab_size},
        "model": {"embedding_size": 16, "hidden_size": 16, "num_layers": 1, "decoder_hidden_size": 32,
                  "dropout": 0.0},
        "train": section})


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pretrain")
    pairs = write_digit_pairs(directory / "first.tsv", count=60, seed=1)
    return train(digits_config(pairs), directory / "run").last_checkpoint


def test_fine_tuning_starts_from_the_checkpoints_loss_not_from_scratch(pretrained: Path, tmp_path: Path) -> None:
    new_pairs = write_digit_pairs(tmp_path / "second.tsv", count=60, seed=2)
    # Another vocabulary size: a run from scratch trains its own tokenizer; fine-tuning must not.
    cfg = digits_config(new_pairs, vocab_size=48, max_steps=2)
    scratch = train(cfg, tmp_path / "scratch")
    tuned = train(replace_config(cfg, "train", init_from=str(pretrained)), tmp_path / "tuned")
    assert tuned.steps == 2  # a fresh step count

    checkpoint = load_checkpoint(pretrained)
    tokenizer = Tokenizer.from_state(checkpoint["tokenizer"])
    assert Tokenizer.from_state(load_checkpoint(tuned.last_checkpoint)["tokenizer"]).fingerprint() == \
        tokenizer.fingerprint()
    # The first update's loss is the pretrained model's loss on that update's batches of the new data.
    data = prepare(cfg, verbose=False, tokenizer=tokenizer)
    group = batching.epoch_groups(data.train, cfg.train, 0, loop_module.DistContext())[0]
    model = loop_module.Seq2Seq.from_config(cfg.model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)
    model.load_state_dict(checkpoint["model"])
    objective = Objective(model, label_smoothing=0.0, teacher_forcing=1.0)
    with torch.no_grad():
        sums = sum(objective(b.src_ids, b.src_lengths, b.tgt_in_ids, b.tgt_out_ids)
                   for b in (data.train.collate(indices) for indices in group))
    expected = sums[0].item() / batching.target_tokens(data.train, group)
    assert tuned.losses[1] == pytest.approx(expected, rel=1e-4)
    assert tuned.losses[1] < 0.8 * scratch.losses[1]


def test_fine_tuning_refuses_another_model_shape_naming_the_keys(pretrained: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    pairs = write_digit_pairs(tmp_path / "pairs.tsv", count=20, seed=3)
    cfg = digits_config(pairs, max_steps=1, init_from=str(pretrained))
    wider = replace_config(cfg, "model", hidden_size=24)
    with pytest.raises(CheckpointError, match=r"model\.hidden_size \(16 in .*last\.pt, 24 in the config\)"):
        train(wider, tmp_path / "run")
    config_path = tmp_path / "cfg.yaml"
    config_path.write_text("", encoding="utf-8")
    sets = ["--set=data.format=tsv", f"--set=data.train={pairs}", "--set=train.device=cpu",
            "--set=train.max_steps=1", "--set=model.num_layers=2"]
    assert main(["-q", "train", str(config_path), *sets, "--init-from", str(pretrained),
                 "--run-dir", str(tmp_path / "cli")]) == 2
    assert "model.num_layers" in capsys.readouterr().err


def test_a_fine_tuning_run_resumes_with_its_checkpoints_tokenizer(pretrained: Path, tmp_path: Path) -> None:
    pairs = write_digit_pairs(tmp_path / "pairs.tsv", count=60, seed=4)
    cfg = digits_config(pairs, vocab_size=48, max_steps=2, init_from=str(pretrained))
    train(cfg, tmp_path / "run")
    resumed = train(replace_config(cfg, "train", max_steps=3, init_from=""), tmp_path / "run", resume=True)
    assert resumed.steps == 3 and list(resumed.losses) == [3]

