"""seq2seq: recurrent neural machine translation.

A GRU encoder reads the source; its final hidden state ``h_n`` starts a symmetric
multi-layer GRU decoder; optional attention reads the encoder ``output``.
"""

from .config import Config, load_config

__version__ = "0.1.0"

__all__ = ["Config", "load_config", "Seq2Seq", "Translator", "__version__"]


def __getattr__(name: str):
    # Imported lazily so that `import seq2seq` (and the CLI's --help) does not pay for torch.
    if name == "Seq2Seq":
        from .model.seq2seq import Seq2Seq

        return Seq2Seq
    if name == "Translator":
        from .translate import Translator

        return Translator
    raise AttributeError(f"module 'seq2seq' has no attribute {name!r}")
