"""The fused Bahdanau loop skips padding: with targets of different lengths, step t runs only the rows still open.

- the decoder on a padded batch equals the nn.GRU-per-step decoder (which steps through the
  padding) at every real position, forward and the gradient of every parameter;
- the packed loop's backward equals autograd through the same packed forward, with dropout,
  rows ending at different steps and a gradient on the last hidden state;
- the last hidden state of each row is its state after its own last step, and steps past the
  longest row leave zeros.
"""

from __future__ import annotations

import pytest
import torch

from seq2seq.model.fused import StepwiseRecurrence, active_rows, loop_parameters, run_loop, stepwise_recurrence
from test_fused_decoder import (_differentiable_weights, _loss_and_grads, _model, _stepped_with_nn_gru,
                                random_loop_inputs)

VOCAB = 19
TGT_LENGTHS = torch.tensor([3, 7, 1, 5, 7])  # BOS + target: rows end at different steps, not sorted


def _padded_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    src_lengths = torch.tensor([6, 2, 4, 1, 5])
    src = torch.randint(4, VOCAB, (5, 6), generator=generator)
    src[torch.arange(6)[None, :] >= src_lengths[:, None]] = 0
    tgt_in = torch.randint(4, VOCAB, (5, 7), generator=generator)
    tgt_in[:, 0] = 2
    tgt_in[torch.arange(7)[None, :] >= TGT_LENGTHS[:, None]] = 0
    return src, src_lengths, tgt_in


def _real(logits: torch.Tensor) -> torch.Tensor:
    return logits[torch.arange(logits.size(1))[None, :] < TGT_LENGTHS[:, None]]


@pytest.mark.parametrize("num_layers", [1, 2])
def test_on_a_padded_batch_the_decoder_equals_the_nn_gru_per_step_decoder_at_every_real_position(
        num_layers: int, monkeypatch) -> None:
    model, batch = _model(num_layers).train(), _padded_batch()
    real = (torch.arange(7)[None, :] < TGT_LENGTHS[:, None]).float()[:, :, None]  # the loss reads real positions
    logits, grads = _loss_and_grads(_masked_logits(model, real), batch)
    monkeypatch.setattr(type(model.decoder), "_loop", _stepped_with_nn_gru)
    expected_logits, expected_grads = _loss_and_grads(_masked_logits(model, real), batch)
    torch.testing.assert_close(_real(logits), _real(expected_logits), rtol=0, atol=1e-5)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-4, atol=1e-5, msg=name)


def _masked_logits(model, real: torch.Tensor):
    """The model with its logits zeroed at padded positions, so no gradient flows from there."""
    forward = model.forward
    model.forward = lambda *batch: forward(*batch) * real  # type: ignore[method-assign]
    return model


def test_the_packed_loops_backward_equals_autograd_through_the_same_packed_forward() -> None:
    torch.manual_seed(4)
    num_layers, (steps, batch, size, src_len) = 2, (5, 4, 7, 5)
    decoder = _model(num_layers).decoder
    params = loop_parameters(decoder.gru, decoder.attention.query_proj, decoder.attention.energy, 6)
    active = active_rows(torch.tensor([5, 5, 3, 1]), steps)
    assert active == [4, 3, 3, 2, 2]
    gi, hidden, keys, values, mask_bias, drop = random_loop_inputs(num_layers, steps, batch, size, src_len)
    inputs = [gi, hidden, keys, values, *params]
    ours = StepwiseRecurrence.apply(gi, hidden, keys, values, mask_bias, drop, active, 6, decoder.gru,
                                    decoder.attention.query_proj, decoder.attention.energy, *params)
    expected = run_loop(gi, hidden, keys, values, mask_bias, drop, _differentiable_weights(params, num_layers),
                        active=active)
    for j in (0, 1, 2, 3):
        torch.testing.assert_close(ours[j], expected[j], rtol=0, atol=1e-6)
    assert ours[0][3:, 2:].abs().max() == 0 and ours[0][1:, 3].abs().max() == 0  # ended rows: zeros
    upstream = [torch.randn_like(ours[i]) for i in (0, 1, 3)]  # the last hidden's gradient joins mid-walk
    grads = torch.autograd.grad([ours[i] for i in (0, 1, 3)], inputs, upstream)
    reference = torch.autograd.grad([expected[i] for i in (0, 1, 3)], inputs, upstream)
    for index, (grad, expected_grad) in enumerate(zip(grads, reference)):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-5, msg=f"input {index}")


def test_each_rows_last_hidden_is_its_state_after_its_own_last_step_in_the_batchs_order() -> None:
    torch.manual_seed(6)
    decoder, (steps, batch, size, src_len) = _model(2).decoder, (6, 4, 7, 5)
    gru, query_proj, energy = decoder.gru, decoder.attention.query_proj, decoder.attention.energy
    params = loop_parameters(gru, query_proj, energy, 6)
    lengths = torch.tensor([2, 5, 1, 4])  # unsorted, and none reaches the last step
    gi, hidden = torch.randn(steps, batch, 3 * size), torch.randn(2, batch, size)
    keys, values, mask_bias = torch.randn(batch, src_len, size), torch.randn(batch, src_len, 10), torch.zeros(batch,
                                                                                                            src_len)
    with torch.enable_grad():
        top, context, weights, last = stepwise_recurrence(gi.requires_grad_(), hidden, keys, values, mask_bias,
                                                          None, lengths, 6, gru, query_proj, energy, params)
    for row, length in enumerate(lengths.tolist()):
        alone = stepwise_recurrence(gi[:length, row:row + 1], hidden[:, row:row + 1], keys[row:row + 1],
                                    values[row:row + 1], mask_bias[row:row + 1], None, None, 6, gru, query_proj,
                                    energy, params)
        torch.testing.assert_close(last[:, row], alone[3][:, 0], rtol=0, atol=1e-6)
        torch.testing.assert_close(top[:length, row], alone[0][:, 0], rtol=0, atol=1e-6)
        assert top[length:, row].abs().max() == 0 and weights[length:, row].abs().max() == 0
    assert weights[:, :, :].sum(-1)[0].allclose(torch.ones(batch))
