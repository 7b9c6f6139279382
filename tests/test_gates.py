"""The transparent GRU reproduces nn.GRU from its own weights, and its gates obey PyTorch's equations."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seq2seq.inspection.gates import (gru_step, gru_weights, record_calls, replay_calls, replay_difference, transparent_cell,
                          transparent_gru)

TOL = 1e-5


def _gru(*, num_layers: int, bidirectional: bool, batch_first: bool = True, bias: bool = True) -> nn.GRU:
    torch.manual_seed(0)
    gru = nn.GRU(input_size=5, hidden_size=4, num_layers=num_layers, bidirectional=bidirectional,
                 batch_first=batch_first, bias=bias, dropout=0.0)
    return gru.eval()


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [True, False])
def test_transparent_gru_matches_nn_gru_on_full_sequences(num_layers: int, bidirectional: bool,
                                                          batch_first: bool) -> None:
    gru = _gru(num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first)
    x = torch.randn(3, 6, 5) if batch_first else torch.randn(6, 3, 5)
    directions = 2 if bidirectional else 1
    h0 = torch.randn(num_layers * directions, 3, 4)
    with torch.no_grad():
        expected_output, expected_h_n = gru(x, h0)
        trace = transparent_gru(gru, x, h0)
    assert trace.output.shape == expected_output.shape
    assert trace.h_n.shape == expected_h_n.shape
    assert _max_diff(trace.output, expected_output) < TOL
    assert _max_diff(trace.h_n, expected_h_n) < TOL
    assert len(trace.layers) == num_layers and all(len(layer) == directions for layer in trace.layers)


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_transparent_gru_matches_nn_gru_on_packed_padded_batch(num_layers: int, bidirectional: bool) -> None:
    gru = _gru(num_layers=num_layers, bidirectional=bidirectional)
    lengths = torch.tensor([3, 7, 1, 5])  # unsorted, as a batch arrives
    x = torch.randn(4, 7, 5)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    with torch.no_grad():
        expected_packed, expected_h_n = gru(packed)
        trace = transparent_gru(gru, packed)
    expected_output, _ = pad_packed_sequence(expected_packed, batch_first=True)
    output, output_lengths = pad_packed_sequence(trace.output, batch_first=True)
    assert torch.equal(output_lengths, lengths)
    assert _max_diff(output, expected_output) < TOL
    assert _max_diff(trace.h_n, expected_h_n) < TOL
    # Gates at padded positions are zero, as the outputs there are.
    update = trace.gate("update", layer=num_layers - 1, direction=0)
    assert update[0, 3:].abs().max().item() == 0.0 and update[0, :3].min().item() > 0.0


def test_backward_direction_of_a_padded_sentence_starts_at_its_last_real_token() -> None:
    gru = _gru(num_layers=1, bidirectional=True)
    x = torch.randn(1, 4, 5)
    padded = torch.cat([x, torch.randn(1, 3, 5)], dim=1)  # junk after the real tokens
    with torch.no_grad():
        alone = transparent_gru(gru, x)
        in_batch = transparent_gru(gru, pack_padded_sequence(padded, torch.tensor([4]), batch_first=True))
    backward_alone = alone.gate("hidden", layer=0, direction=1)
    backward_in_batch = in_batch.gate("hidden", layer=0, direction=1)[:, :4]
    assert _max_diff(backward_alone, backward_in_batch) < TOL
    assert _max_diff(alone.h_n, in_batch.h_n) < TOL


def test_bias_free_gru_is_reproduced() -> None:
    gru = _gru(num_layers=2, bidirectional=True, bias=False)
    x = torch.randn(2, 5, 5)
    with torch.no_grad():
        expected_output, expected_h_n = gru(x)
        trace = transparent_gru(gru, x)
    assert _max_diff(trace.output, expected_output) < TOL
    assert _max_diff(trace.h_n, expected_h_n) < TOL


def test_gates_satisfy_the_state_update_with_z_weighting_the_old_state() -> None:
    gru = _gru(num_layers=1, bidirectional=False)
    x = torch.randn(2, 6, 5)
    h0 = torch.randn(1, 2, 4)
    with torch.no_grad():
        trace = transparent_gru(gru, x, h0)
    layer = trace.layers[0][0]
    previous = torch.cat([h0[0][:, None], layer.hidden[:, :-1]], dim=1)  # (B, S, H): the state before each step
    recombined = (1 - layer.update) * layer.candidate + layer.update * previous
    assert _max_diff(recombined, layer.hidden) < TOL
    for gate in (layer.reset, layer.update):
        assert gate.min().item() > 0.0 and gate.max().item() < 1.0


def test_update_gate_near_one_keeps_the_old_state() -> None:
    gru = _gru(num_layers=1, bidirectional=False)
    with torch.no_grad():
        gru.bias_ih_l0[4:8] = 50.0  # the z block of r|z|n: z = sigmoid(large) ~ 1
        x = torch.randn(1, 5, 5)
        h0 = torch.randn(1, 1, 4)
        trace = transparent_gru(gru, x, h0)
        expected_output, _ = gru(x, h0)
    assert trace.layers[0][0].update.min().item() > 0.999
    assert _max_diff(trace.h_n[0], h0[0]) < 1e-4
    assert _max_diff(trace.output, expected_output) < TOL


def test_gru_step_and_cell_match_nn_gru_cell() -> None:
    torch.manual_seed(1)
    cell = nn.GRUCell(input_size=5, hidden_size=4)
    inputs = torch.randn(3, 4, 5)
    h = torch.randn(3, 4)
    with torch.no_grad():
        trace = transparent_cell(cell, inputs, h)
        for t in range(inputs.shape[1]):
            h = cell(inputs[:, t], h)
            assert _max_diff(trace.hidden[:, t], h) < TOL


def test_gru_weights_follow_pytorch_parameter_names() -> None:
    gru = _gru(num_layers=2, bidirectional=True)
    weights = gru_weights(gru)
    assert weights[1][1].weight_ih is gru.weight_ih_l1_reverse
    assert weights[0][0].bias_hh is gru.bias_hh_l0
    x_proj = torch.nn.functional.linear(torch.zeros(1, 5), weights[0][0].weight_ih, weights[0][0].bias_ih)
    r, z, n, h = gru_step(x_proj, torch.zeros(1, 4), weights[0][0])
    assert r.shape == z.shape == n.shape == h.shape == (1, 4)


def test_unbatched_input_is_refused_with_its_shape() -> None:
    gru = _gru(num_layers=1, bidirectional=False)
    with pytest.raises(ValueError, match=r"\(6, 5\)"):
        transparent_gru(gru, torch.randn(6, 5))


def test_recorded_one_step_calls_replay_as_one_sequence() -> None:
    gru = _gru(num_layers=2, bidirectional=False)
    x = torch.randn(2, 5, 5)
    h = torch.randn(2, 2, 4)
    with torch.no_grad(), record_calls(gru) as calls:
        for t in range(x.shape[1]):  # a decoder's way: one step per call, the state carried over
            _, h = gru(x[:, t:t + 1], h)
    with torch.no_grad():
        gru(x)  # outside the block: not recorded
        trace = replay_calls(gru, calls)
    assert len(calls) == 5
    assert replay_difference(gru, trace, calls) < TOL
    assert _max_diff(trace.h_n, h) < TOL


def test_replay_difference_exposes_calls_that_do_not_continue_each_other() -> None:
    gru = _gru(num_layers=1, bidirectional=False)
    x = torch.randn(1, 3, 5)
    with torch.no_grad(), record_calls(gru) as calls:
        for t in range(3):
            gru(x[:, t:t + 1], torch.randn(1, 1, 4))  # a fresh state every step
    with torch.no_grad():
        trace = replay_calls(gru, calls)
    assert replay_difference(gru, trace, calls) > 1e-3
