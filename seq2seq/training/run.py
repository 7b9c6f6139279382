"""A training run's directory and saved state: who may use the directory, what resuming restores, the RNGs.

``last.pt`` holds the weights and a ``train_state`` entry (:func:`training_state`) with
the loop's counters, the optimizer and scaler, and every process's random generators, so
``--resume`` continues bit for bit where the run stopped.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from ..checkpoint import load_checkpoint
from ..config import Config, config_from_dict, config_to_dict
from ..errors import CheckpointError, ConfigError, Seq2SeqError
from .lock import is_launch_main
from .schedule import PlateauState

logger = logging.getLogger("seq2seq.training")


@dataclass
class TrainState:
    """Everything the loop changes; it goes into ``last.pt`` so that ``--resume`` continues exactly."""

    step: int = 0
    epoch: int = 0  # completed epochs
    batches_done: int = 0  # of the current epoch's batch order, over all processes
    best_bleu: float = -math.inf
    best_score: float = -math.inf  # the best train.stop_metric, signed so that higher is better
    bad_validations: int = 0  # validations since the best one (early stopping)
    last_validated: int = -1  # the step of the latest validation
    plateau: PlateauState = field(default_factory=PlateauState)
    train_seconds: float = 0.0  # wall time of every session of the run so far (reported; resuming ignores it)


def restore_training(checkpoint: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler, rank: int) -> TrainState:
    """Load weights, optimizer, scaler and RNG states from last.pt; returns the loop's state."""
    saved = checkpoint["train_state"]
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if saved["scaler"] and scaler.is_enabled():
        scaler.load_state_dict(saved["scaler"])
    rng_states = saved["rng"]
    restore_rng_state(rng_states[rank] if rank < len(rng_states) else rng_states[0])
    return TrainState(step=saved["step"], epoch=saved["epoch"], batches_done=saved["batches_done"],
                      best_bleu=saved["best_bleu"], best_score=saved.get("best_score", saved["best_bleu"]),
                      bad_validations=saved["bad_validations"],
                      last_validated=saved["last_validated"], plateau=PlateauState.from_state(saved["plateau"]),
                      train_seconds=saved.get("train_seconds", 0.0))


def training_state(state: TrainState, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   rng_states: list[Any], device: torch.device | None = None) -> dict[str, Any]:
    """The ``train_state`` entry of last.pt: the loop's state, the optimizer, the scaler, every process's RNGs,
    and the device type the run trained on (so that a resume elsewhere can say what changes)."""
    return {"step": state.step, "epoch": state.epoch, "batches_done": state.batches_done,
            "best_bleu": state.best_bleu, "best_score": state.best_score, "bad_validations": state.bad_validations,
            "last_validated": state.last_validated, "plateau": state.plateau.to_state(),
            "train_seconds": state.train_seconds,
            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "rng": rng_states,
            "device": device.type if device is not None else ""}


def seed_everything(seed: int) -> None:
    """The one place training seeds: Python, NumPy (if present) and torch (CPU and every GPU)."""
    random.seed(seed)
    torch.manual_seed(seed)
    with contextlib.suppress(ImportError):
        import numpy as np

        np.random.seed(seed)


def use_deterministic_algorithms(enabled: bool) -> None:
    """``train.deterministic``: deterministic kernels on CUDA (an error names any op that has none).

    cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG`` set before its first handle is created, so this runs
    before the model touches the GPU; a value the user exported is kept. cuDNN's autotuner is
    off either way under it, since it may pick a different algorithm after a restart.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    if enabled:
        torch.backends.cudnn.benchmark = False


def capture_rng_state() -> dict[str, Any]:
    """Every random number generator training draws from, as tensors and plain lists (``weights_only``-safe).

    Dropout and scheduled sampling draw from torch (CPU and CUDA); Python's ``random`` and
    NumPy are saved too, so that code using them resumes exactly as well.
    """
    version, mt_state, gauss_next = random.getstate()
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": [version, list(mt_state), gauss_next]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np
    except ImportError:
        return state
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state["numpy"] = [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached_gaussian)]
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back the generators saved by :func:`capture_rng_state` (CUDA only where this machine has GPUs)."""
    torch.set_rng_state(state["torch"])
    version, mt_state, gauss_next = state["python"]
    random.setstate((version, tuple(mt_state), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"][: torch.cuda.device_count()]
        for index, cuda_state in enumerate(cuda_states):
            torch.cuda.set_rng_state(cuda_state, index)
    if "numpy" in state:
        import numpy as np

        name, keys, pos, has_gauss, cached_gaussian = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached_gaussian))


RUN_FILES = ("last.pt", "best.pt", "config.yaml", "train.log", "tensorboard", "checkpoints")
# What a resumed run may change: when it stops, where it runs, how it reports; decode.* may change as well.
RESUMABLE_KEYS = ("train.device", "train.amp", "train.max_steps", "train.max_epochs", "train.patience",
                  "train.validate_every", "train.log_every", "train.max_nonfinite", "train.save_every",
                  "train.keep_last", "train.keep_best", "data.cache_dir")


def open_run(run_dir: str | Path, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """Check what a training run may do with ``run_dir``; returns last.pt when resuming, else None.

    A directory that already holds a run is never reused silently: that needs ``--resume``
    (continue it) or ``--overwrite`` (replace it).
    """
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise ConfigError("--resume continues the run in the run directory and --overwrite discards it: pick one")
    if resume:
        last = run_dir / "last.pt"
        begun = [name for name in RUN_FILES if (run_dir / name).exists()]
        if not last.exists() and begun:
            if is_launch_main():
                logger.warning("--resume: %s holds a run stopped before its first last.pt (%s): starting it "
                               "from step 0", run_dir, ", ".join(begun))
            return None
        if not last.exists():
            raise CheckpointError(f"--resume: there is no {last} to continue from; start the run without --resume")
        checkpoint = load_checkpoint(last)
        if "train_state" not in checkpoint:
            raise CheckpointError(f"{last} holds no training state, so it cannot be resumed")
        if is_launch_main():
            _check_best(run_dir / "best.pt", last, checkpoint["train_state"]["best_bleu"])
        return checkpoint
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    if existing and not overwrite:
        raise Seq2SeqError(f"the run directory {run_dir} already holds a run ({', '.join(existing)}); continue it "
                           f"with --resume, replace it with --overwrite, or choose another --run-dir")
    return None


def _check_best(best: Path, last: Path, best_bleu: float) -> None:
    """A damaged best.pt does not stop a resume (last.pt is what it needs); say so, and what replaces it."""
    if not best.exists():
        return
    try:
        load_checkpoint(best)
    except CheckpointError:
        logger.warning("%s is damaged (not a readable checkpoint: truncated or corrupt). The run resumes from %s, "
                       "which is intact; the next validation with a dev BLEU above %.2f writes a new best.pt "
                       "(until then, use last.pt)", best, last, best_bleu)


def check_resume_device(checkpoint: dict[str, Any], cfg: Config, path: Path) -> None:
    """Refuse, saying how to go on, a resume of a GPU run that asks for a GPU this machine lacks; a resume
    that may move to the CPU (train.device auto or cpu) goes on with a warning."""
    saved = checkpoint["train_state"].get("device", "")
    if saved != "cuda" or torch.cuda.is_available():
        return
    if cfg.train.device.startswith("cuda") or cfg.train.amp == "fp16":
        raise ConfigError(f"{path} was saved by a run on a CUDA GPU (train.device={cfg.train.device}, "
                          f"train.amp={cfg.train.amp}), and torch sees no GPU on this machine. Resume on a machine "
                          f"with a GPU, or continue on the CPU with --set train.device=cpu --set train.amp=off "
                          f"(or bf16)")
    logger.warning("%s was saved by a run on a CUDA GPU; it continues on %s, no longer bit for bit as the GPU "
                   "would have computed it", path, cfg.train.device)


def describe_survivors(run_dir: Path) -> str:
    """What a failed run leaves usable in ``run_dir``, for error messages."""
    kept = [f"{run_dir / name} (written {_mtime(run_dir / name)})" for name in ("last.pt", "best.pt")
            if (run_dir / name).is_file()]
    if not kept:
        return f"No checkpoint of this run was written in {run_dir}"
    return f"Kept intact: {', '.join(kept)}; continue with --resume once the cause is fixed"


def _mtime(path: Path) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(path.stat().st_mtime))


def clear_run(run_dir: str | Path) -> None:
    """Delete the files a previous run left in ``run_dir`` (only those: other files stay)."""
    for name in RUN_FILES:
        path = Path(run_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def resume_config(stored: Config, given: Config, path: str | Path) -> Config:
    """The config a resumed run uses: the stored one, with the RESUMABLE_KEYS (and decode.*) taken from ``given``.

    Any other difference (model shape, tokenizer, data, optimisation) would not continue
    the same run, so it is refused, naming the keys.
    """
    stored_flat, given_flat = _flatten(config_to_dict(stored)), _flatten(config_to_dict(given))
    changed = [key for key in given_flat if given_flat[key] != stored_flat.get(key)]
    refused = [key for key in changed if key not in RESUMABLE_KEYS and not key.startswith("decode.")]
    if refused:
        details = ", ".join(f"{key} ({stored_flat.get(key)!r} -> {given_flat[key]!r})" for key in refused)
        raise ConfigError(f"{path} was trained with other values of {details}; a resumed run keeps its stored "
                          f"config and may only change {', '.join(RESUMABLE_KEYS)} and decode.*. Drop those "
                          f"changes, or start a new run (--overwrite or another --run-dir)")
    merged = config_to_dict(stored)
    for key in changed:
        section, name = key.split(".", 1)
        merged[section][name] = given_flat[key]
    train_changes = [key for key in changed if key.startswith("train.")]
    if train_changes and is_launch_main():
        # Said aloud: a resume command without the first command's --set (say train.keep_last) changes them too.
        logger.warning("resuming %s with %s", path, ", ".join(f"{key} {stored_flat.get(key)!r} -> {given_flat[key]!r}"
                                                            for key in train_changes))
    return config_from_dict(merged)


def _flatten(sections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {f"{section}.{name}": value for section, values in sections.items() for name, value in values.items()}


@dataclass
class StopFlag:
    """Set by SIGINT / SIGTERM; the loop reads it after each step."""

    requested: bool = False
    signum: int = 0  # the signal that asked; the command exits 128 + signum after saving, as shells expect

    @property
    def exit_status(self) -> int:
        return 128 + self.signum if self.signum else 0


@contextlib.contextmanager
def stop_signals() -> Iterator[StopFlag]:
    """SIGINT / SIGTERM ask the loop to stop after the current step (it then saves last.pt); a second one aborts."""
    flag = StopFlag()

    def handle(signum: int, frame: Any) -> None:
        if flag.requested:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        flag.requested, flag.signum = True, signum

    previous = {}
    if threading.current_thread() is threading.main_thread():  # Python only allows handlers there
        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
