"""The GRU encoder-decoder: encoder, attention, decoder and the Seq2Seq that joins them."""

from .decoder import DecoderState, StepOutput
from .encoder import EncoderOutput
from .seq2seq import Introspection, Seq2Seq

__all__ = ["DecoderState", "EncoderOutput", "Introspection", "Seq2Seq", "StepOutput"]
