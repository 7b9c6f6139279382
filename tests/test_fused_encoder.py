"""The fused encoder GRU (seq2seq/model/fused_encoder.py) against nn.GRU over packed sequences.

The encoder runs the fused layers on the CPU while autograd records; a forward hook on its
nn.GRU (as inspection registers) makes it call nn.GRU instead, so every test here runs one
encoder both ways, with the same parameters:

- outputs, h_n and the gradient of every parameter and of the input equal nn.GRU's to 1e-5,
  uni- and bidirectional, 1 and 2 layers, unsorted lengths with a sentence of one token and
  padding beyond the longest sentence;
- dropout between layers draws the masks the per-layer nn.GRU path draws, from the same seed;
- a whole training step of the reference shape gives the same loss and gradients;
- under bf16 autocast it runs, stays fp32 where it should, and is close to fp32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from seq2seq.config import load_config
from seq2seq.model.encoder import Encoder, fused_pays
from seq2seq.model.fused_encoder import fused_gru
from seq2seq.model.seq2seq import Seq2Seq
from seq2seq.training.loss import Objective

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB = 23
LENGTHS = [4, 7, 1, 7, 2, 5]  # unsorted, repeated, a single token; the batch is padded to S = 9


@contextlib.contextmanager
def nn_gru_path(encoder: Encoder) -> Iterator[None]:
    """Inside the block the encoder calls its nn.GRU (a hook watches it), outside it runs the fused layers."""
    handle = encoder.gru.register_forward_hook(lambda *args: None)
    try:
        yield
    finally:
        handle.remove()


def _encoder(bidirectional: bool, num_layers: int, dropout: float = 0.0) -> Encoder:
    torch.manual_seed(0)
    return Encoder(embedding=torch.nn.Embedding(VOCAB, 6, padding_idx=0), hidden_size=5, num_layers=num_layers,
                   bidirectional=bidirectional, dropout=dropout).train()


def _batch(lengths: list[int], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    src = torch.randint(1, VOCAB, (len(lengths), width), generator=generator)
    lengths_t = torch.tensor(lengths)
    src[torch.arange(width)[None, :] >= lengths_t[:, None]] = 0
    return src, lengths_t


def _run(encoder: Encoder, src: torch.Tensor, lengths: torch.Tensor, seed: int = 5
         ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Output, h_n and the gradients of (embedding, every GRU parameter) of a loss that weighs every value."""
    torch.manual_seed(seed)
    output, h_n = encoder(src, lengths)
    generator = torch.Generator().manual_seed(2)
    loss = (output * torch.randn(output.shape, generator=generator)).sum()
    loss = loss + (h_n * torch.randn(h_n.shape, generator=generator)).sum()
    params = [encoder.embedding.weight, *encoder.gru.parameters()]
    return output.detach(), h_n.detach(), list(torch.autograd.grad(loss, params))


def _autograd_names(tensor: torch.Tensor) -> set[str]:
    """The names of every node in the autograd graph behind ``tensor``."""
    seen, todo = set(), [tensor.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and node not in seen:
            seen.add(node)
            todo.extend(next_node for next_node, _ in node.next_functions)
    return {type(node).__name__ for node in seen}


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_fused_layers_equal_nn_gru_over_packed_sequences(bidirectional: bool, num_layers: int) -> None:
    encoder = _encoder(bidirectional, num_layers)
    src, lengths = _batch(LENGTHS, width=9)
    output, h_n, grads = _run(encoder, src, lengths)
    assert "FusedGRULayerBackward" in _autograd_names(encoder(src, lengths)[0])
    with nn_gru_path(encoder):
        assert "FusedGRULayerBackward" not in _autograd_names(encoder(src, lengths)[0])
        ref_output, ref_h_n, ref_grads = _run(encoder, src, lengths)
    torch.testing.assert_close(output, ref_output, rtol=0, atol=1e-5)
    torch.testing.assert_close(h_n, ref_h_n, rtol=0, atol=1e-5)
    assert output[torch.arange(9)[None, :] >= lengths[:, None]].abs().max() == 0  # zeros on padding
    assert len(grads) == 1 + 4 * num_layers * (2 if bidirectional else 1)
    for grad, ref in zip(grads, ref_grads):
        assert ref.abs().max() > 0
        torch.testing.assert_close(grad, ref, rtol=0, atol=1e-5)


def test_a_sentence_alone_encodes_as_in_a_padded_batch() -> None:
    encoder = _encoder(bidirectional=True, num_layers=2)
    src, lengths = _batch(LENGTHS, width=9)
    output, h_n = encoder(src, lengths)
    for b, length in enumerate(LENGTHS):
        alone, alone_h = encoder(src[b:b + 1, :length], lengths[b:b + 1])
        torch.testing.assert_close(alone[0], output[b, :length], rtol=0, atol=1e-6)
        torch.testing.assert_close(alone_h[:, 0], h_n[:, b], rtol=0, atol=1e-6)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_dropout_between_layers_draws_the_masks_of_the_per_layer_nn_gru_path(bidirectional: bool) -> None:
    encoder = _encoder(bidirectional, num_layers=3, dropout=0.4)
    src, lengths = _batch(LENGTHS, width=8)
    output, h_n, grads = _run(encoder, src, lengths, seed=7)
    with nn_gru_path(encoder):
        ref_output, ref_h_n, ref_grads = _run(encoder, src, lengths, seed=7)
    torch.testing.assert_close(output, ref_output, rtol=0, atol=1e-5)
    torch.testing.assert_close(h_n, ref_h_n, rtol=0, atol=1e-5)
    for grad, ref in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref, rtol=0, atol=1e-5)
    other_output, _, _ = _run(encoder, src, lengths, seed=8)
    assert not torch.allclose(other_output, output, atol=1e-3)  # the dropout is really drawn
    _run(encoder, src, lengths, seed=7)
    after = torch.rand(3)
    with nn_gru_path(encoder):
        _run(encoder, src, lengths, seed=7)
    assert torch.equal(torch.rand(3), after)  # the generator advanced as nn.GRU's path advances it: resume holds


def _reference_model() -> tuple[Seq2Seq, Objective]:
    """The reference config's model shape (configs/multi30k_de_en.yaml) with a small vocabulary."""
    cfg = load_config("configs/multi30k_de_en.yaml", [])
    torch.manual_seed(0)
    model = Seq2Seq.from_config(cfg.model, 300, 300).train()
    return model, Objective(model, cfg.train.label_smoothing, 1.0)


def test_a_training_step_of_the_reference_shape_gives_the_same_loss_and_gradients() -> None:
    model, objective = _reference_model()
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(6, 15, (64,), generator=generator)
    src = torch.randint(4, 300, (64, 14), generator=generator)
    src[torch.arange(14)[None, :] >= lengths[:, None]] = 0
    tgt = torch.randint(4, 300, (64, 15), generator=generator)

    def step() -> tuple[torch.Tensor, list[torch.Tensor]]:
        torch.manual_seed(3)  # dropout on, as in training
        loss = objective(src, lengths, tgt[:, :-1], tgt[:, 1:])[0] / 1000
        return loss.detach(), list(torch.autograd.grad(loss, list(model.parameters())))

    loss, grads = step()
    assert "FusedGRULayerBackward" in _autograd_names(objective(src, lengths, tgt[:, :-1], tgt[:, 1:]))
    with nn_gru_path(model.encoder):
        ref_loss, ref_grads = step()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=0)
    for (name, param), grad, ref in zip(model.named_parameters(), grads, ref_grads):
        torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")


def test_under_bf16_autocast_it_runs_in_fp32_state_and_stays_close_to_fp32() -> None:
    encoder = _encoder(bidirectional=True, num_layers=2)
    src, lengths = _batch(LENGTHS, width=9)
    output, h_n, grads = _run(encoder, src, lengths)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert encoder(src, lengths)[0].dtype == torch.float32
        low_output, low_h_n, low_grads = _run(encoder, src, lengths)
    assert 0 < (low_output - output).abs().max() < 0.03
    assert (low_h_n - h_n).abs().max() < 0.03
    for grad, low in zip(grads, low_grads):
        assert low.dtype == torch.float32
        assert (low - grad).norm() <= 0.05 * grad.norm()


def test_the_fused_layers_run_only_where_they_pay() -> None:
    encoder = _encoder(bidirectional=True, num_layers=2)
    inputs = torch.zeros(2, 3, 6)
    assert fused_pays(encoder.gru, inputs)
    with torch.no_grad():
        assert not fused_pays(encoder.gru, inputs)  # search: nn.GRU is faster without autograd
    with nn_gru_path(encoder):
        assert not fused_pays(encoder.gru, inputs)
    assert not fused_pays(encoder.gru, torch.zeros(2, 3, 6, device="meta"))
    assert not fused_pays(encoder.gru.to(torch.bfloat16), inputs)  # parameters kept in bf16: nn.GRU handles them


def test_without_autograd_the_fused_layers_give_nn_grus_output() -> None:
    """Search keeps nn.GRU (faster there, scripts/encoder_ab.py measures both); the fused layers still agree."""
    encoder = _encoder(bidirectional=True, num_layers=2).eval()
    lengths = torch.tensor([7, 7, 5, 2, 1])
    packed = pack_padded_sequence(torch.randn(5, 7, 6), lengths, batch_first=True)
    with torch.no_grad():
        output, h_n = fused_gru(encoder.gru, packed, training=False)
        ref_output, ref_h_n = encoder.gru(packed)
    torch.testing.assert_close(output.data, ref_output.data, rtol=0, atol=1e-5)
    torch.testing.assert_close(h_n, ref_h_n, rtol=0, atol=1e-5)
