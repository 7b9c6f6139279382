"""Checkpoints: one self-contained file with the weights, the resolved config and the tokenizer.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads
with ``torch.load(..., weights_only=True)``: opening one from an untrusted source cannot
run code. Writes go to a temporary file that is renamed over the target, so a crash
never leaves a half-written checkpoint in place of a good one.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_file
from .config import Config, config_from_dict, config_to_dict
from .errors import CheckpointError, ConfigError, Seq2SeqError

FORMAT = "seq2seq-checkpoint"
VERSION = 1


@dataclass
class LoadedModel:
    """A model ready for inference, with the tokenizer and config it was trained with."""

    model: Any  # Seq2Seq, in eval mode
    tokenizer: Any  # Tokenizer
    config: Config


def build_checkpoint(cfg: Config, model_state: dict[str, torch.Tensor], tokenizer_state: dict[str, Any],
                     train_state: dict[str, Any] | None = None) -> dict[str, Any]:
    """The dict that :func:`save_checkpoint` writes. ``train_state`` holds what resuming needs."""
    checkpoint = {"format": FORMAT, "version": VERSION, "config": config_to_dict(cfg),
                  "tokenizer": tokenizer_state, "model": model_state}
    if train_state is not None:
        checkpoint["train_state"] = train_state
    return checkpoint


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Write atomically: to a temporary file in the same directory, fsync, then rename over ``path``."""
    with atomic_file(path, "wb") as handle:
        torch.save(checkpoint, handle)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; a missing, truncated or foreign file raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for damaged files
        raise CheckpointError(f"{path} is not a readable seq2seq checkpoint (truncated or corrupt?): "
                              f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a seq2seq checkpoint (no '{FORMAT}' marker)")
    if checkpoint.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {checkpoint.get('version')}; "
                              f"this seq2seq reads version {VERSION}")
    for key in ("config", "tokenizer", "model"):
        if key not in checkpoint:
            raise CheckpointError(f"{path} lacks the '{key}' entry")
    return checkpoint


def config_of(checkpoint: dict[str, Any], path: str | Path) -> Config:
    """The resolved config stored in a checkpoint."""
    try:
        return config_from_dict(checkpoint["config"])
    except ConfigError as exc:
        raise CheckpointError(f"{path} holds a config this version cannot read: {exc}") from exc


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


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the model and tokenizer of a checkpoint, in eval mode on ``device``."""
    from .model.seq2seq import Seq2Seq
    from .tokenizer import Tokenizer

    checkpoint = load_checkpoint(path)
    cfg = config_of(checkpoint, path)
    tokenizer = Tokenizer.from_state(checkpoint["tokenizer"])
    model = Seq2Seq.from_config(cfg.model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: the weights do not fit the model its config describes: {exc}") from exc
    model.to(device).eval()
    return LoadedModel(model=model, tokenizer=tokenizer, config=cfg)


RUN_FILES = ("last.pt", "best.pt", "config.yaml", "train.log", "tensorboard")
# What a resumed run may change: when it stops, where it runs, how it reports; decode.* may change as well.
RESUMABLE_KEYS = ("train.device", "train.amp", "train.max_steps", "train.max_epochs", "train.patience",
                  "train.validate_every", "train.log_every", "train.max_nonfinite", "data.cache_dir")


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
        if not last.is_file():
            raise CheckpointError(f"--resume: there is no {last} to continue from; start the run without --resume")
        checkpoint = load_checkpoint(last)
        if "train_state" not in checkpoint:
            raise CheckpointError(f"{last} holds no training state, so it cannot be resumed")
        return checkpoint
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    if existing and not overwrite:
        raise Seq2SeqError(f"the run directory {run_dir} already holds a run ({', '.join(existing)}); continue it "
                           f"with --resume, replace it with --overwrite, or choose another --run-dir")
    return None


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
    return config_from_dict(merged)


def _flatten(sections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {f"{section}.{name}": value for section, values in sections.items() for name, value in values.items()}
