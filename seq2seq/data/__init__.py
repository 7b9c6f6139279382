"""Data: corpus readers, the synthetic task, the tokenizer, preparation with its cache, and batches."""

from .batches import Batch, EncodedCorpus
from .preparation import PreparedData, prepare
from .tokenizer import Tokenizer

__all__ = ["Batch", "EncodedCorpus", "PreparedData", "Tokenizer", "prepare"]
