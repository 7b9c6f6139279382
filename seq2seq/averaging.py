"""Checkpoint averaging: the element-wise mean of the weights of checkpoints of one model.

Averaging the last few checkpoints of a run (Vaswani et al. 2017; Junczys-Dowmunt et al. 2016)
smooths the noise of the final updates. Only checkpoints of the same model shape and the same
tokenizer can be averaged; anything else is refused, naming what differs. The result is a
normal checkpoint (weights, config and tokenizer of the first input; no training state), so
``load_model``, ``seq2seq translate`` and ``seq2seq evaluate`` read it like any other.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from .checkpoint import build_checkpoint, check_same_model, config_of, load_checkpoint, save_checkpoint
from .data.tokenizer import Tokenizer
from .errors import CheckpointError
from .training.kept import kept_checkpoints

logger = logging.getLogger(__name__)

def average_checkpoints(paths: list[str | Path]) -> dict[str, Any]:
    """The checkpoint dict whose weights are the mean of those in ``paths`` (computed in float64).

    Raises CheckpointError when fewer than one path is given, or when the model config (shape
    keys), the tokenizer or the weight names/shapes differ; the message names both files.
    """
    if not paths:
        raise CheckpointError("nothing to average: give at least one checkpoint")
    first_path = Path(paths[0])
    first = load_checkpoint(first_path)
    first_cfg = config_of(first, first_path)
    fingerprint = Tokenizer.from_state(first["tokenizer"]).fingerprint()
    sums = {name: tensor.to(torch.float64) for name, tensor in first["model"].items()}
    for path in paths[1:]:
        other = load_checkpoint(path)
        check_same_model(first_cfg.model, config_of(other, path).model, first_path, Path(path))
        if Tokenizer.from_state(other["tokenizer"]).fingerprint() != fingerprint:
            raise CheckpointError(f"cannot combine {first_path} and {path}: the tokenizer differs")
        _add_weights(sums, other["model"], first_path, Path(path))
    averaged = {name: (total / len(paths)).to(first["model"][name].dtype) for name, total in sums.items()}
    return build_checkpoint(first_cfg, averaged, first["tokenizer"])


def _add_weights(sums: dict[str, torch.Tensor], weights: dict[str, torch.Tensor], first_path: Path,
                 path: Path) -> None:
    """Add ``weights`` into ``sums`` in place; names and shapes must match those of the first checkpoint."""
    if set(weights) != set(sums):
        different = sorted(set(weights) ^ set(sums))
        raise CheckpointError(f"cannot combine {first_path} and {path}: weights {', '.join(different[:5])} are "
                              f"in one but not the other")
    for name, tensor in weights.items():
        if tensor.shape != sums[name].shape:
            raise CheckpointError(f"cannot combine {first_path} and {path}: weight {name} has shape "
                                  f"{tuple(sums[name].shape)} in one and {tuple(tensor.shape)} in the other")
        sums[name] += tensor.to(torch.float64)


def last_kept(run_dir: str | Path, count: int) -> list[Path]:
    """The ``count`` latest kept checkpoints of a run (``train.keep_last``), oldest first."""
    if count < 1:
        raise CheckpointError(f"--last must be at least 1, got {count}")
    kept = kept_checkpoints(run_dir)
    if len(kept) < count:
        raise CheckpointError(f"{run_dir} keeps {len(kept)} checkpoint(s) in {Path(run_dir) / 'checkpoints'}, "
                              f"fewer than the {count} asked for (train.keep_last sets how many a run keeps)")
    return kept[-count:]


def average_command(*, inputs: list[str], last: int | None, output: str) -> None:
    """``seq2seq average``: write the average of the checkpoints ``inputs``, or with ``last`` of the
    latest ``last`` kept checkpoints of the run directory ``inputs[0]``."""
    if last is not None:
        if len(inputs) != 1:
            raise CheckpointError(f"--last N takes one run directory, got {len(inputs)} argument(s): "
                                  f"seq2seq average -o OUT.pt --last N RUN_DIR")
        paths: list[str | Path] = list(last_kept(inputs[0], last))
    else:
        paths = list(inputs)
    save_checkpoint(average_checkpoints(paths), output)
    logger.info("averaged %d checkpoints into %s: %s", len(paths), output, ", ".join(str(p) for p in paths))
