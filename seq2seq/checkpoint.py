"""The checkpoint file: one self-contained file with the weights, the resolved config and the tokenizer.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads
with ``torch.load(..., weights_only=True)``: opening one from an untrusted source cannot
run code. Writes go to a temporary file that is renamed over the target, so a crash
never leaves a half-written checkpoint in place of a good one.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pickle

import torch

from .config import Config, ModelConfig, config_from_dict, config_to_dict
from .data.tokenizer import Tokenizer
from .errors import CheckpointError, ConfigError
from .model.seq2seq import Seq2Seq
from .textio import file_problem
from .writing import atomic_file

FORMAT = "seq2seq-checkpoint"
# model.* settings that leave the weights' shapes and meaning alone: they may differ between models combined.
SHAPE_EXEMPT = frozenset({"dropout", "word_dropout"})
VERSION = 1


@dataclass
class LoadedModel:
    """A model ready for inference, with the tokenizer and config it was trained with."""

    model: Seq2Seq  # in eval mode
    tokenizer: Tokenizer
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
    """Write atomically: to a temporary file in the same directory, fsync, then rename over ``path``.

    A full disk or another write error raises StorageError naming ``path`` and saying that the
    previous file, if any, is unchanged.
    """
    with atomic_file(path, "wb") as handle:
        torch.save(checkpoint, handle)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; a missing, truncated or foreign file raises CheckpointError."""
    path = Path(path)
    problem = file_problem(path)
    if problem is not None:
        raise CheckpointError(problem if path.exists() else f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path} is not a seq2seq checkpoint: it holds objects other than tensors and plain "
                              f"data{_refused_object(exc)}, which seq2seq never writes; it was not loaded, since "
                              f"unpickling such a file can run code hidden in it") from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, ... for damaged files
        raise CheckpointError(f"{path} is not a readable seq2seq checkpoint (truncated or corrupt?): "
                              f"{type(exc).__name__}: {exc}{_sibling_hint(path)}") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a seq2seq checkpoint (no '{FORMAT}' marker)")
    if checkpoint.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {checkpoint.get('version')}; "
                              f"this seq2seq reads version {VERSION}")
    for key in ("config", "tokenizer", "model"):
        if key not in checkpoint:
            raise CheckpointError(f"{path} lacks the '{key}' entry")
    return checkpoint


def _refused_object(exc: pickle.UnpicklingError) -> str:
    """The object torch refused to unpickle, e.g. " (GLOBAL posix.system)"; torch's own advice is left out on
    purpose: it suggests loading the file with weights_only=False, i.e. running whatever it holds."""
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    return f" ({found.group(1)})" if found else ""


def _sibling_hint(path: Path) -> str:
    """For a damaged best.pt, point at the last.pt beside it (written by the same run)."""
    last = path.with_name("last.pt")
    if path.name != "best.pt" or not last.is_file():
        return ""
    return (f". {last} beside it is a separate file: use -c {last}, or resume the run with --resume, "
            f"whose next better validation writes a new best.pt")


def config_of(checkpoint: dict[str, Any], path: str | Path) -> Config:
    """The resolved config stored in a checkpoint."""
    try:
        return config_from_dict(checkpoint["config"])
    except ConfigError as exc:
        raise CheckpointError(f"{path} holds a config this version cannot read: {exc}") from exc


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the model and tokenizer of a checkpoint, in eval mode on ``device``."""
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


def check_same_model(first: ModelConfig, other: ModelConfig, first_name: Path | str, other_name: Path | str) -> None:
    """Raise CheckpointError naming every ``model.*`` key (with both values) on which the two models' weights differ.

    Used where weights of one model meet another: averaging, and fine-tuning from a checkpoint.
    """
    differences = [f"model.{f.name} ({getattr(first, f.name)!r} in {first_name}, {getattr(other, f.name)!r} in "
                   f"{other_name})" for f in dataclasses.fields(ModelConfig)
                   if f.name not in SHAPE_EXEMPT and getattr(first, f.name) != getattr(other, f.name)]
    if differences:
        raise CheckpointError(f"{first_name} and {other_name} hold different models: {'; '.join(differences)}")


def load_matching_checkpoint(path: str | Path, model_cfg: ModelConfig) -> dict[str, Any]:
    """A checkpoint to start a model of ``model_cfg`` from (fine-tuning); CheckpointError names any model key
    that differs."""
    checkpoint = load_checkpoint(path)
    check_same_model(config_of(checkpoint, path).model, model_cfg, path, "the config")
    return checkpoint
