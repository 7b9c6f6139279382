"""How the package runs nn.GRU: per layer in training (dropout from torch's generator), longest-first packing
without a device round trip, ``train.deterministic``. The CUDA sides of these are in tests/test_cuda.py."""

from __future__ import annotations

import os

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seq2seq.config import ModelConfig, config_from_dict
from seq2seq.model.encoder import run_gru
from seq2seq.model.seq2seq import Seq2Seq
from seq2seq.training.run import use_deterministic_algorithms


def _packed(lengths: list[int], size: int = 4) -> tuple[torch.Tensor, torch.nn.utils.rnn.PackedSequence]:
    x = torch.randn(len(lengths), max(lengths), size, requires_grad=True)
    return x, pack_padded_sequence(x, torch.tensor(lengths), batch_first=True, enforce_sorted=True)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_per_layer_training_run_equals_nn_gru_bit_for_bit_dropout_included(bidirectional: bool) -> None:
    torch.manual_seed(0)
    gru = torch.nn.GRU(4, 5, num_layers=3, batch_first=True, bidirectional=bidirectional, dropout=0.4)
    x, packed = _packed([6, 4, 4, 1])
    torch.manual_seed(7)
    ours, ours_h = run_gru(gru, packed, training=True)
    torch.manual_seed(7)
    theirs, theirs_h = gru(packed)
    assert torch.equal(ours.data, theirs.data) and torch.equal(ours_h, theirs_h)
    ours_grads = torch.autograd.grad(ours.data.sum() + ours_h.sum(), [x, *gru.parameters()], retain_graph=True)
    theirs_grads = torch.autograd.grad(theirs.data.sum() + theirs_h.sum(), [x, *gru.parameters()])
    for a, b in zip(ours_grads, theirs_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_per_layer_run_of_a_batch_first_decoder_gru_with_a_start_state_equals_nn_gru() -> None:
    torch.manual_seed(0)
    gru = torch.nn.GRU(4, 6, num_layers=2, batch_first=True, dropout=0.5)
    x, h0 = torch.randn(3, 5, 4), torch.randn(2, 3, 6)
    torch.manual_seed(1)
    ours, ours_h = run_gru(gru, x, h0, training=True)
    torch.manual_seed(1)
    theirs, theirs_h = gru(x, h0)
    assert torch.equal(ours, theirs) and torch.equal(ours_h, theirs_h)
    torch.manual_seed(2)
    different, _ = run_gru(gru, x, h0, training=True)
    assert not torch.equal(different, ours)  # the dropout is really drawn


def test_the_encoder_sorts_an_unsorted_batch_itself_and_answers_in_the_batch_order() -> None:
    torch.manual_seed(0)
    model = Seq2Seq.from_config(ModelConfig(embedding_size=6, hidden_size=5, num_layers=2, decoder_hidden_size=7),
                                17, 17).eval()
    lengths = torch.tensor([3, 6, 1, 6, 4])
    src = torch.randint(4, 17, (5, 6))
    src[torch.arange(6)[None, :] >= lengths[:, None]] = 0
    output, h_n = model.encoder(src, lengths)
    embedded = model.encoder.embedding(src)
    packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
    expected_packed, expected_h = model.encoder.gru(packed)
    expected, _ = pad_packed_sequence(expected_packed, batch_first=True, total_length=6)
    torch.testing.assert_close(output, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(h_n, expected_h, rtol=0, atol=1e-6)


def test_train_deterministic_is_a_setting_and_switches_torchs_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    assert config_from_dict({"train": {"deterministic": True}}).train.deterministic
    assert not config_from_dict({}).train.deterministic
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        use_deterministic_algorithms(True)
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        use_deterministic_algorithms(False)
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
