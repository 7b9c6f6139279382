"""Two torchrun "nodes" on this machine (c10d rendezvous on 127.0.0.1, gloo) train as one process would.

Each node is its own ``torchrun --nnodes 2 --node_rank N --nproc_per_node 1`` launch, as on two hosts;
together they must give the weights of a single process that accumulates both nodes' batches.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from seq2seq.checkpoint import load_checkpoint
from seq2seq.config import config_from_dict
from seq2seq.training.distributed import rank_device
from seq2seq.errors import ConfigError
from seq2seq.training.loop import train

from digits import write_digit_pairs  # tests/digits.py


def _config_dict(tmp_path: Path, **train_changes: Any) -> dict[str, Any]:
    pairs = write_digit_pairs(tmp_path / "pairs.tsv", count=24, seed=3)
    train_section = {"device": "cpu", "batch_by": "sentences", "batch_size": 6, "lr": 0.01, "scheduler": "constant",
                     "max_steps": 3, "validate_every": 3, "log_every": 1, "patience": 0, "max_epochs": 100,
                     "amp": "off", "label_smoothing": 0.1}
    train_section.update(train_changes)
    return {"data": {"format": "tsv", "train": str(pairs), "dev": str(pairs), "cache_dir": str(tmp_path / "cache")},
            "tokenizer": {"vocab_size": 64},
            "model": {"embedding_size": 16, "hidden_size": 16, "num_layers": 2, "decoder_hidden_size": 32,
                      "attention": "bahdanau", "dropout": 0.0},
            "train": train_section}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow  # two torchrun launches side by side and one plain run: about 15 s
def test_two_torchrun_nodes_train_as_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    single = train(config_from_dict(_config_dict(tmp_path, accumulate=2)), tmp_path / "single")
    config_path = tmp_path / "nodes.yaml"
    config_path.write_text(yaml.safe_dump(_config_dict(tmp_path, accumulate=1)), encoding="utf-8")
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node),
         "--nproc_per_node", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
         "--rdzv_id", "seq2seq-test", "-m", "seq2seq", "train", str(config_path), "--run-dir", str(tmp_path / "nodes")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for node in (0, 1)]
    for node in nodes:
        _, stderr = node.communicate(timeout=300)
        assert node.returncode == 0, stderr[-3000:]
    checkpoint = load_checkpoint(tmp_path / "nodes" / "last.pt")
    assert checkpoint["train_state"]["step"] == single.steps == 3
    assert len(checkpoint["train_state"]["rng"]) == 2
    single_weights = load_checkpoint(tmp_path / "single" / "last.pt")["model"]
    for name, value in checkpoint["model"].items():
        torch.testing.assert_close(value, single_weights[name], rtol=0, atol=1e-5, msg=name)


def test_each_rank_takes_its_local_gpu_or_the_only_one_it_sees() -> None:
    assert rank_device(3, 8) == torch.device("cuda", 3)
    assert rank_device(3, 1) == torch.device("cuda", 0)  # a launcher showed this rank its own GPU only
    with pytest.raises(ConfigError, match="LOCAL_RANK=3 but this process sees only 2 GPUs"):
        rank_device(3, 2)
