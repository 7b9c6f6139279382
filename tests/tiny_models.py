"""Untrained tiny models saved as checkpoints: enough for tests of equivalences between decoding paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from seq2seq.checkpoint import build_checkpoint, save_checkpoint
from seq2seq.config import config_from_dict
from seq2seq.model import Seq2Seq

SENTENCES = ["ein Hund läuft im Park .", "zwei Kinder spielen .", "die Frau lächelt .",
             "ein Mann kocht in der Küche ."]


def write_random_checkpoint(path: Path, tokenizer: Any, seed: int, **model: Any) -> Path:
    """A checkpoint of a randomly initialised (seeded) small model with ``tokenizer``; ``model`` overrides keys."""
    cfg = config_from_dict({"model": {"embedding_size": 16, "hidden_size": 16, "num_layers": 1,
                                      "decoder_hidden_size": 32, "dropout": 0.0, **model},
                            "decode": {"beam_size": 3, "max_length_a": 1.0, "max_length_b": 5, "amp": "off"}})
    torch.manual_seed(seed)
    net = Seq2Seq.from_config(cfg.model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)
    save_checkpoint(build_checkpoint(cfg, net.state_dict(), tokenizer.to_state()), path)
    return path


def assert_decoder_gru_called_only_when_hooked(model: Seq2Seq, src: torch.Tensor, lengths: torch.Tensor,
                                               tgt_in: torch.Tensor) -> None:
    """A fused decoder neither trains nor steps through its nn.GRU, but makes one call per target step when a
    forward hook watches it (the inspection tools record the gates that way)."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("nn.GRU called")

    model.decoder.gru.forward = refuse
    model(src, lengths, tgt_in).sum().backward()
    enc = model.encode(src, lengths)
    model.decode_step(tgt_in[:, 0], model.init_state(enc), enc)
    calls = []
    del model.decoder.gru.forward
    model.decoder.gru.register_forward_hook(lambda *_: calls.append(1))
    model(src, lengths, tgt_in)
    assert len(calls) == tgt_in.size(1)


def objects_left_in_cycles_by_a_backward(model: Seq2Seq, batch: tuple[torch.Tensor, ...]) -> list[str]:
    """Type names of the tensors and autograd nodes that only Python's cycle collector would free after one
    forward and backward of ``model`` on ``batch``: a cycle through an autograd node keeps every step's
    activations alive until the collector happens to run (gigabytes in a long training run)."""
    import gc

    gc.collect()
    gc.disable()
    try:
        model(*batch).sum().backward()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        return [type(o).__name__ for o in gc.garbage if torch.is_tensor(o) or "Backward" in type(o).__name__]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def random_batch(vocab: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed batch of 5 padded sources (lengths 6, 2, 4, 1, 5, PAD = 0) and targets of 7 tokens (BOS first)."""
    generator = torch.Generator().manual_seed(3)
    lengths = torch.tensor([6, 2, 4, 1, 5])
    src = torch.randint(4, vocab, (5, 6), generator=generator)
    src[torch.arange(6)[None, :] >= lengths[:, None]] = 0
    tgt_in = torch.randint(4, vocab, (5, 7), generator=generator)
    tgt_in[:, 0] = 2
    return src, lengths, tgt_in
