"""Checkpoints a run keeps besides last.pt and best.pt, for averaging and for going back.

``train.keep_best: N`` keeps the N best validations by ``train.stop_metric`` (see :func:`keep_best`).

``train.keep_last: N`` keeps the N latest saves (every validation and every
``train.save_every`` steps) as ``RUN_DIR/checkpoints/step-NNNNNNNN.pt``: weights, config and
tokenizer, without the optimizer state, so each is a third of last.pt and loads anywhere a
checkpoint does. The zero-padded step makes the names sort in training order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..checkpoint import save_checkpoint
from ..writing import atomic_file

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


# train.keep_best: the N best validations by train.stop_metric, as RUN_DIR/checkpoints/best-NNNNNNNN.pt
# (named by step, so they sort in training order). BEST_INDEX lists them best first with their
# scores; it is what a resumed run reads to know which ones it keeps.
BEST_INDEX = "best.json"


def best_kept_path(run_dir: Path, step: int) -> Path:
    """Where the validation of ``step`` is kept when it is among the best."""
    return run_dir / KEPT_DIR / f"best-{step:08d}.pt"


def best_kept(run_dir: str | Path) -> list[dict[str, Any]]:
    """The index of the kept best checkpoints, best first: ``{"step", "metric", "value", "score", "path"}``."""
    index = Path(run_dir) / KEPT_DIR / BEST_INDEX
    if not index.is_file():
        return []
    return json.loads(index.read_text(encoding="utf-8"))


def keep_best(run_dir: Path, checkpoint: dict[str, Any], step: int, metric: str, value: float, score: float,
              keep: int) -> Path | None:
    """Keep ``checkpoint`` if ``score`` (higher = better) is among the ``keep`` best; returns its path or None.

    The checkpoint is written first, then the index (atomically), then the file that fell out
    is deleted: a crash at any point leaves an index whose files all exist. An entry of the
    same step (a validation repeated after a resume) is replaced.
    """
    entries = [entry for entry in best_kept(run_dir) if entry["step"] != step]
    if len(entries) >= keep and score <= entries[keep - 1]["score"]:
        return None
    path = best_kept_path(run_dir, step)
    save_checkpoint(checkpoint, path)
    entry = {"step": step, "metric": metric, "value": value, "score": score, "path": path.name}
    entries = sorted([*entries, entry], key=lambda item: (-item["score"], item["step"]))
    with atomic_file(run_dir / KEPT_DIR / BEST_INDEX, "w") as handle:
        json.dump(entries[:keep], handle, indent=1)
    for dropped in entries[keep:]:
        (run_dir / KEPT_DIR / dropped["path"]).unlink(missing_ok=True)
    return path
