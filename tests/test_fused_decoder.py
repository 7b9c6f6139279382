"""The fused step-wise (Bahdanau) decoder: PyTorch's GRU equations, its hand-written backward, old checkpoints.

- the cell equals nn.GRU, forward and gradients, to 1e-5 in fp32;
- the whole decoder equals the nn.GRU-per-step decoder it replaced (same parameters), forward and
  the gradient of every parameter, with 1 to 3 layers;
- the loop's backward (one autograd node, weight gradients over all steps at once) equals autograd
  run through the same forward, dropout masks included;
- a checkpoint written by the nn.GRU-per-step decoder loads and decodes the same (tests/data).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from seq2seq.config import DecodeConfig, ModelConfig
from seq2seq.model.decoder import DecoderState, _Recurrence
from seq2seq.model.fused import LoopWeights, StepwiseRecurrence, loop_parameters, run_loop
from seq2seq.model.gru_cell import gru_cell
from seq2seq.model.seq2seq import Seq2Seq
from seq2seq.search import search
from tiny_models import (assert_decoder_gru_called_only_when_hooked,  # tests/tiny_models.py
                         objects_left_in_cycles_by_a_backward, random_batch)

FIXTURE = Path(__file__).parent / "data" / "bahdanau_nn_gru.pt"
VOCAB = 19


def _model(num_layers: int, seed: int = 0, **changes) -> Seq2Seq:
    torch.manual_seed(seed)
    settings = dict(embedding_size=6, hidden_size=5, num_layers=num_layers, bidirectional=True,
                    decoder_hidden_size=7, attention="bahdanau", dropout=0.0)
    cfg = ModelConfig(**{**settings, **changes})
    return Seq2Seq.from_config(cfg, VOCAB, VOCAB)


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return random_batch(VOCAB)


def _nn_gru_step(decoder, embedded_t, state, enc) -> _Recurrence:
    """The decoder step as it was: attention from the previous top state, then one nn.GRU call with T = 1."""
    context, attention = decoder.attention(state.hidden[-1][:, None, :], enc.keys, enc.output, enc.src_mask)
    top, hidden = decoder.gru(torch.cat([embedded_t[:, None, :], context], dim=-1), state.hidden)
    return _Recurrence(top=top, context=context, attention=attention, readout=None, state=DecoderState(hidden=hidden))


def _loss_and_grads(model: Seq2Seq, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    logits = model(*batch)
    weights = torch.linspace(-1, 1, logits.numel()).view_as(logits)  # every logit matters, differently
    (logits * weights).sum().backward()
    return logits.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def test_cell_equals_nn_gru_forward_and_gradients() -> None:
    torch.manual_seed(0)
    gru = torch.nn.GRU(6, 8)
    x, h = torch.randn(5, 6, requires_grad=True), torch.randn(5, 8, requires_grad=True)
    expected, _ = gru(x[None], h[None])
    gi = torch.nn.functional.linear(x, gru.weight_ih_l0, gru.bias_ih_l0)
    gh = torch.nn.functional.linear(h, gru.weight_hh_l0, gru.bias_hh_l0)
    ours, _ = gru_cell(gi, gh, h)
    torch.testing.assert_close(ours, expected[0], rtol=0, atol=1e-5)
    upstream = torch.randn(5, 8)
    expected_grads = torch.autograd.grad(expected[0], [x, h, *gru.parameters()], upstream)
    our_grads = torch.autograd.grad(ours, [x, h, *gru.parameters()], upstream)
    for ours_g, expected_g in zip(our_grads, expected_grads):
        torch.testing.assert_close(ours_g, expected_g, rtol=0, atol=1e-5)


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_decoder_equals_the_nn_gru_per_step_decoder_with_the_same_parameters(num_layers: int,
                                                                              monkeypatch) -> None:
    model, batch = _model(num_layers).train(), _batch()  # dropout 0: train mode only to take the training path
    logits, grads = _loss_and_grads(model, batch)
    monkeypatch.setattr(type(model.decoder), "_loop", _stepped_with_nn_gru)
    expected_logits, expected_grads = _loss_and_grads(model, batch)
    torch.testing.assert_close(logits, expected_logits, rtol=0, atol=1e-5)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-4, atol=1e-5, msg=name)


def _stepped_with_nn_gru(decoder, embedded, state, enc, lengths=None) -> _Recurrence:
    steps = []
    for embedded_t in embedded.unbind(1):
        steps.append(_nn_gru_step(decoder, embedded_t, state, enc))
        state = steps[-1].state
    cat = lambda name: torch.cat([getattr(s, name) for s in steps], 1)  # noqa: E731
    return _Recurrence(top=cat("top"), context=cat("context"), attention=cat("attention"), readout=None,
                       state=state)


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_the_loops_backward_equals_autograd_through_the_same_forward_with_dropout(num_layers: int) -> None:
    torch.manual_seed(num_layers)
    model = _model(num_layers)
    decoder, (steps, batch, size, src_len) = model.decoder, (4, 3, 7, 5)
    params = loop_parameters(decoder.gru, decoder.attention.query_proj, decoder.attention.energy, 6)
    gi, hidden, keys, values, mask_bias, drop = random_loop_inputs(num_layers, steps, batch, size, src_len)
    inputs = [gi, hidden, keys, values, *params]
    outputs = StepwiseRecurrence.apply(gi, hidden, keys, values, mask_bias, drop, None, 6, decoder.gru,
                                       decoder.attention.query_proj, decoder.attention.energy, *params)
    expected = run_loop(gi, hidden, keys, values, mask_bias, drop, _differentiable_weights(params, num_layers))
    upstream = [torch.randn_like(outputs[i]) for i in (0, 1, 3)]
    for i, j in enumerate((0, 1, 3)):
        torch.testing.assert_close(outputs[j], expected[j], rtol=0, atol=1e-6)
    ours = torch.autograd.grad([outputs[i] for i in (0, 1, 3)], inputs, upstream)
    reference = torch.autograd.grad([expected[i] for i in (0, 1, 3)], inputs, upstream)
    for index, (grad, expected_grad) in enumerate(zip(ours, reference)):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-5, msg=f"input {index}")


def random_loop_inputs(num_layers: int, steps: int, batch: int, size: int, src_len: int) -> tuple[torch.Tensor, ...]:
    """Random inputs of the fused loop (gi, hidden, keys, values of width 10, a mask bias hiding the
    source positions from 3 on in row 1, dropout masks between layers at p = 0.3), the first four
    requiring gradients."""
    gi = torch.randn(steps, batch, 3 * size, requires_grad=True)
    hidden = torch.randn(num_layers, batch, size, requires_grad=True)
    keys = torch.randn(batch, src_len, size, requires_grad=True)
    values = torch.randn(batch, src_len, 10, requires_grad=True)
    mask_bias = torch.zeros(batch, src_len)
    mask_bias[1, 3:] = float("-inf")
    drop = torch.empty(num_layers - 1, steps, batch, size).bernoulli_(0.7).div_(0.7)
    return gi, hidden, keys, values, mask_bias, drop


def _differentiable_weights(params: list[torch.Tensor], num_layers: int) -> LoopWeights:
    """LoopWeights built from the parameters themselves (not detached), in loop_parameters' order."""
    ih_context, rest = params[0], params[1:]
    hh, hh_bias = rest[0:2 * num_layers:2], rest[1:2 * num_layers:2]
    ih_rest = rest[2 * num_layers:-3]
    w_q, b_q, energy = rest[-3:]
    return LoopWeights(top=torch.cat([hh[-1], w_q]), top_bias=torch.cat([hh_bias[-1], b_q]), hh=list(hh[:-1]),
                       hh_bias=list(hh_bias[:-1]), ih=list(ih_rest[0::2]), ih_bias=list(ih_rest[1::2]),
                       ih_context=ih_context, energy=energy[0])


def test_training_and_stepping_never_call_the_decoders_nn_gru_unless_it_is_hooked() -> None:
    model, (src, lengths, tgt_in) = _model(2).train(), _batch()
    assert_decoder_gru_called_only_when_hooked(model, src, lengths, tgt_in)


def test_dropout_between_layers_comes_from_torchs_generator() -> None:
    model, batch = _model(2, dropout=0.5).train(), _batch()
    torch.manual_seed(11)
    first = model(*batch)
    torch.manual_seed(11)
    again = model(*batch)
    torch.manual_seed(12)
    other = model(*batch)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.allclose(first, other)


def test_a_checkpoint_of_the_nn_gru_decoder_loads_and_decodes_the_same() -> None:
    fixture = torch.load(FIXTURE, weights_only=True)
    model = Seq2Seq.from_config(ModelConfig(**fixture["model_config"]), fixture["vocab"], fixture["vocab"])
    model.load_state_dict(fixture["state_dict"], strict=True)  # same parameter names and shapes
    model.eval()
    src, lengths = fixture["src_ids"], fixture["src_lengths"]
    with torch.no_grad():
        log_probs = torch.log_softmax(model(src, lengths, fixture["tgt_in_ids"]), -1)
    torch.testing.assert_close(log_probs, fixture["log_probs"], rtol=0, atol=1e-5)
    for beam in (1, 5):
        hypotheses = search(model, src, lengths, DecodeConfig(beam_size=beam, amp="off"))
        assert [h[0].tgt_ids for h in hypotheses] == fixture[f"beam{beam}_ids"]
        torch.testing.assert_close(torch.tensor([h[0].score for h in hypotheses]),
                                   torch.tensor(fixture[f"beam{beam}_scores"]), rtol=0, atol=1e-5)


def test_search_under_bf16_autocast_keeps_the_state_fp32_and_matches_fp32_tokens_mostly() -> None:
    fixture = torch.load(FIXTURE, weights_only=True)
    cfg = dataclasses.replace(ModelConfig(**fixture["model_config"]))
    model = Seq2Seq.from_config(cfg, fixture["vocab"], fixture["vocab"])
    model.load_state_dict(fixture["state_dict"])
    model.eval()
    src, lengths = fixture["src_ids"], fixture["src_lengths"]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        enc = model.encode(src, lengths)
        step = model.decode_step(torch.full((src.size(0),), 2), model.init_state(enc), enc)
    assert step.state.hidden.dtype == torch.float32 and step.log_probs.dtype == torch.float32
    with torch.no_grad():
        enc32 = model.encode(src, lengths)
        step32 = model.decode_step(torch.full((src.size(0),), 2), model.init_state(enc32), enc32)
    torch.testing.assert_close(step.log_probs, step32.log_probs, rtol=0, atol=0.1)


def test_each_search_sees_the_weights_a_fused_optimizer_step_changed_in_place() -> None:
    model, (src, lengths, tgt_in) = _model(2), _batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, fused=True)  # bumps no parameter version

    def search_step() -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            enc = model.encode(src, lengths)
            return model.decode_step(tgt_in[:, 0], model.init_state(enc), enc).log_probs

    before = search_step()  # arranges the loop's weights for this search
    model.train()
    model(src, lengths, tgt_in).logsumexp(-1).mean().backward()
    optimizer.step()
    after = search_step()
    model.decoder.forget_arranged_weights()
    with torch.no_grad():
        enc = model.encode(src, lengths)
        model.decoder.forget_arranged_weights()
        fresh = model.decode_step(tgt_in[:, 0], model.init_state(enc), enc).log_probs
    torch.testing.assert_close(after, fresh, rtol=0, atol=0)
    assert not torch.allclose(before, after)


@pytest.mark.parametrize("attention", ["bahdanau", "luong_general", "none"])
def test_a_training_step_leaves_no_reference_cycle_holding_tensors(attention: str) -> None:
    model = _model(num_layers=2, dropout=0.3, attention=attention).train()
    batch = _batch()
    assert objects_left_in_cycles_by_a_backward(model, batch) == []
