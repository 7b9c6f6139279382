"""seq2seq: recurrent neural machine translation.

A GRU encoder reads the source; its final hidden state ``h_n`` starts a symmetric
multi-layer GRU decoder; optional attention reads the encoder ``output``.

The public API::

    from seq2seq import Translator, load_config, prepare, train

    cfg = load_config("quickstart", ["train.max_steps=200"])  # a shipped config, or a YAML file
    result = train(cfg, run_dir="runs/quickstart")            # -> TrainResult
    translator = Translator.from_checkpoint(result.best_checkpoint)
    print(translator.translate(["la navo fela amat."]))

``Seq2Seq`` is the model (``encode``, ``init_state``, ``decode_step``), ``Config`` the
typed configuration, ``prepare`` reads, tokenizes and caches the data of a config.
``Translator.from_pretrained`` loads a model folder written by ``seq2seq export`` (or
one on the Hugging Face Hub). The command line: ``seq2seq --help``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .config import Config, load_config

__version__ = "0.1.0"

# Imported on first use, so that `import seq2seq` (and the CLI's --help) does not pay for torch.
_LAZY = {
    "Seq2Seq": "seq2seq.model",
    "Translator": "seq2seq.translator",
    "prepare": "seq2seq.data",
    "train": "seq2seq.training",
}

__all__ = ["Config", "Seq2Seq", "Translator", "__version__", "load_config", "prepare", "train"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'seq2seq' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
