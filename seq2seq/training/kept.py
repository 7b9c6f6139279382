"""Checkpoints a run keeps besides last.pt and best.pt, for averaging and for going back.

``train.keep_last: N`` keeps the N latest saves (every validation and every
``train.save_every`` steps) as ``RUN_DIR/checkpoints/step-NNNNNNNN.pt``: weights, config and
tokenizer, without the optimizer state, so each is a third of last.pt and loads anywhere a
checkpoint does. The zero-padded step makes the names sort in training order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..checkpoint import save_checkpoint

KEPT_DIR = "checkpoints"


def kept_path(run_dir: Path, step: int) -> Path:
    """Where the save of ``step`` is kept."""
    return run_dir / KEPT_DIR / f"step-{step:08d}.pt"


def kept_checkpoints(run_dir: str | Path) -> list[Path]:
    """The kept saves of a run, oldest first."""
    return sorted((Path(run_dir) / KEPT_DIR).glob("step-*.pt"))


def keep_latest(run_dir: Path, checkpoint: dict[str, Any], step: int, keep: int) -> Path:
    """Write ``checkpoint`` as the save of ``step`` and delete all but the ``keep`` latest; returns its path."""
    path = kept_path(run_dir, step)
    save_checkpoint(checkpoint, path)
    for old in kept_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path
