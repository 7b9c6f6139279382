"""DistributedDataParallel with the gloo backend: two CPU processes under torchrun equal one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from seq2seq.checkpoint import load_checkpoint
from seq2seq.config import config_from_dict
from seq2seq.training.distributed import DistContext, rank_share
from seq2seq.training import train
from seq2seq.training.batching import epoch_groups

from digits import write_digit_pairs  # tests/digits.py



def _config_dict(tmp_path: Path, dropout: float = 0.0, **train_changes: Any) -> dict[str, Any]:
    pairs = write_digit_pairs(tmp_path / "pairs.tsv", count=24, seed=1)
    # 4 batches of 6 sentences per epoch: no batch is left over for one process and not the other.
    train_section = {"device": "cpu", "batch_by": "sentences", "batch_size": 6, "lr": 0.01, "scheduler": "constant", "max_steps": 4,
                     "validate_every": 2, "log_every": 1, "patience": 0, "max_epochs": 100, "amp": "off",
                     "label_smoothing": 0.1}
    train_section.update(train_changes)
    return {"data": {"format": "tsv", "train": str(pairs), "dev": str(pairs), "cache_dir": str(tmp_path / "cache")},
            "tokenizer": {"vocab_size": 64},
            "model": {"embedding_size": 16, "hidden_size": 16, "num_layers": 1, "decoder_hidden_size": 32,
                      "dropout": dropout},
            "train": train_section}


@pytest.mark.slow  # torchrun starts three Python processes: about 10 s
def test_two_gloo_processes_match_one_process_on_the_same_global_batch(tmp_path: Path) -> None:
    # One process accumulating 2 batches per update sees exactly the batches two processes share.
    single = train(config_from_dict(_config_dict(tmp_path, accumulate=2)), tmp_path / "single")

    config_path = tmp_path / "ddp.yaml"
    config_path.write_text(yaml.safe_dump(_config_dict(tmp_path, accumulate=1)), encoding="utf-8")
    _torchrun(config_path, tmp_path / "ddp")

    ddp_checkpoint = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert ddp_checkpoint["train_state"]["step"] == single.steps == 4
    assert len(ddp_checkpoint["train_state"]["rng"]) == 2  # each process's generators, for resuming
    single_weights = load_checkpoint(tmp_path / "single" / "last.pt")["model"]
    for name, value in ddp_checkpoint["model"].items():
        assert torch.allclose(value, single_weights[name], atol=1e-5), name
    log = (tmp_path / "ddp" / "train.log").read_text(encoding="utf-8")
    logged = [float(line.split("| loss ")[1].split()[0]) for line in log.splitlines() if "| loss " in line]
    assert logged == pytest.approx([single.losses[step] for step in range(1, 5)], abs=2e-4)  # rank 0 alone logs


def test_every_process_gets_as_many_batches_and_all_get_each_batch_once(tmp_path: Path) -> None:
    from seq2seq.data import prepare

    cfg = config_from_dict(_config_dict(tmp_path, batch_by="tokens", batch_size=40, accumulate=2))
    corpus = prepare(cfg, verbose=False).train
    contexts = [DistContext(rank=rank, world_size=2) for rank in range(2)]
    groups = epoch_groups(corpus, cfg.train, epoch=0, ctx=contexts[0])
    shares = [[batch for group in groups for batch in rank_share(group, ctx)] for ctx in contexts]
    assert len(shares[0]) == len(shares[1])
    order = corpus.batch_order(40, "tokens", shuffle=True, seed=cfg.train.seed, epoch=0)
    seen = sorted(tuple(batch) for share in shares for batch in share)
    assert seen == sorted(tuple(batch) for batch in order[: len(order) // 2 * 2])


@pytest.mark.slow  # three torchrun launches: about 30 s
def test_a_two_process_run_resumes_exactly(tmp_path: Path) -> None:
    config_path = tmp_path / "ddp.yaml"
    # Dropout draws from each process's own generator: both come back from last.pt.
    config_path.write_text(yaml.safe_dump(_config_dict(tmp_path, dropout=0.2)), encoding="utf-8")
    _torchrun(config_path, tmp_path / "full")
    _torchrun(config_path, tmp_path / "split", "--set", "train.max_steps=2")
    _torchrun(config_path, tmp_path / "split", "--resume")
    full = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    resumed = load_checkpoint(tmp_path / "split" / "last.pt")["model"]
    for name, value in full.items():
        assert torch.equal(value, resumed[name]), name


def _torchrun(config_path: Path, run_dir: Path, *extra: str) -> None:
    """``torchrun --nproc_per_node 2 -m seq2seq train CONFIG --run-dir RUN_DIR ...`` on the CPU (gloo)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "seq2seq", "train", str(config_path), "--run-dir", str(run_dir), *extra]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
