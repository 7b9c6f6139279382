"""The fused Luong input-feeding decoder: PyTorch's GRU equations, its hand-written backward, old checkpoints.

- the cell's hand-written backward gives nn.GRU's gradients of every parameter and input, to 1e-5 in fp32;
- the whole decoder equals the nn.GRU-per-step decoder it replaced (the path a hook on the decoder's
  nn.GRU still takes), forward and every parameter's gradient, 1 to 3 layers, dropout included;
- teacher forcing equals stepping with decode_step;
- the loop's backward equals autograd through the same forward, the initial feed's gradient included;
- a checkpoint decodes (greedy and beam) the same on both paths; bf16 autocast trains and searches;
- search arranges its weights afresh after an in-place optimizer step.
"""

from __future__ import annotations

import copy

import pytest
import torch

from seq2seq.checkpoint import load_model
from seq2seq.config import DecodeConfig, ModelConfig
from seq2seq.model import decoder as decoder_module
from seq2seq.model.dropout import scaled_keep_mask
from seq2seq.model.gru_cell import gru_cell, gru_cell_backward
from seq2seq.model.fused_feeding import FeedingRecurrence, FeedingWeights, feeding_parameters, run_feeding_loop
from seq2seq.model.seq2seq import Seq2Seq
from seq2seq.search import search
from tiny_models import (assert_decoder_gru_called_only_when_hooked,  # tests/tiny_models.py
                         objects_left_in_cycles_by_a_backward, random_batch)

pytestmark = pytest.mark.usefixtures("one_thread")
VOCAB = 19
ATTENTIONS = {"luong_general": 7, "luong_dot": 10}  # dot needs the decoder as wide as the encoder output (2 x 5)


def _model(num_layers: int, attention: str = "luong_general", dropout: float = 0.0, seed: int = 0) -> Seq2Seq:
    torch.manual_seed(seed)
    cfg = ModelConfig(embedding_size=6, hidden_size=5, num_layers=num_layers, bidirectional=True,
                      decoder_hidden_size=ATTENTIONS[attention], attention=attention, input_feeding=True,
                      dropout=dropout)
    return Seq2Seq.from_config(cfg, VOCAB, VOCAB)


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return random_batch(VOCAB)


def _loss_and_grads(model: Seq2Seq, batch, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    torch.manual_seed(seed)
    logits = model(*batch)
    weights = torch.linspace(-1, 1, logits.numel()).view_as(logits)  # every logit matters, differently
    (logits * weights).sum().backward()
    return logits.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def test_the_cells_backward_gives_nn_grus_gradients_of_every_parameter_and_input() -> None:
    torch.manual_seed(0)
    gru = torch.nn.GRU(6, 8)
    x, h = torch.randn(5, 6, requires_grad=True), torch.randn(5, 8, requires_grad=True)
    expected, _ = gru(x[None], h[None])
    upstream = torch.randn(5, 8)
    expected_grads = torch.autograd.grad(expected[0], [x, h, *gru.parameters()], upstream)
    with torch.no_grad():
        gi = torch.nn.functional.linear(x, gru.weight_ih_l0, gru.bias_ih_l0)
        gh = torch.nn.functional.linear(h, gru.weight_hh_l0, gru.bias_hh_l0)
        ours, gates = gru_cell(gi, gh, h)
        d_gi, d_gh, dh_through_z = gru_cell_backward(upstream, h, *gates)
    ours_grads = [d_gi @ gru.weight_ih_l0, dh_through_z + d_gh @ gru.weight_hh_l0,  # x, h
                  d_gi.t() @ x, d_gh.t() @ h, d_gi.sum(0), d_gh.sum(0)]  # W_ih, W_hh, b_ih, b_hh
    torch.testing.assert_close(ours, expected[0], rtol=0, atol=1e-5)
    for name, ours_g, expected_g in zip(["x", "h", "W_ih", "W_hh", "b_ih", "b_hh"], ours_grads, expected_grads):
        torch.testing.assert_close(ours_g, expected_g, rtol=0, atol=1e-5, msg=name)


class _LayerDropoutAsFused:
    """nn.Dropout between the layers of a per-step nn.GRU call, with the masks the fused loop draws.

    The fused loop draws all (L-1, T, B, H) masks with one scaled_keep_mask call; run_gru draws one per step and
    layer. Drawing them here in the fused layout, at the first call, keeps torch's generator in step, so
    both paths drop the same units and the output dropout after the loop draws the same mask too.
    """

    def __init__(self, num_layers: int, steps: int, p: float) -> None:
        self.shape, self.p, self.masks, self.calls = (num_layers - 1, steps), p, None, 0

    def __call__(self, data: torch.Tensor, p: float, training: bool = True, inplace: bool = False) -> torch.Tensor:
        batch, _, size = data.shape  # (B, 1, H): one step of one layer
        if self.masks is None:
            self.masks = scaled_keep_mask((*self.shape, batch, size), self.p, data.device)
        layer, step = self.calls % self.shape[0], self.calls // self.shape[0]
        self.calls += 1
        return data * self.masks[layer, step][:, None, :]


@pytest.mark.parametrize("attention", list(ATTENTIONS))
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_the_fused_loop_equals_the_nn_gru_per_step_path_with_dropout(num_layers: int, attention: str,
                                                                       monkeypatch) -> None:
    model, batch = _model(num_layers, attention, dropout=0.3).train(), _batch()
    logits, grads = _loss_and_grads(model, batch, seed=5)
    model.decoder.gru.register_forward_hook(lambda *_: None)  # the decoder now calls nn.GRU once per step
    run_gru, dropout = decoder_module.run_gru, _LayerDropoutAsFused(num_layers, batch[2].size(1), 0.3)

    def run_gru_with_fused_masks(*args, **kwargs):
        with monkeypatch.context() as patch:
            patch.setattr(torch.nn.functional, "dropout", dropout)
            return run_gru(*args, **kwargs)

    monkeypatch.setattr(decoder_module, "run_gru", run_gru_with_fused_masks)
    expected_logits, expected_grads = _loss_and_grads(model, batch, seed=5)
    assert dropout.calls == (num_layers - 1) * batch[2].size(1)
    torch.testing.assert_close(logits, expected_logits, rtol=0, atol=1e-5)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("attention", list(ATTENTIONS))
def test_teacher_forcing_equals_stepping_with_decode_step(attention: str) -> None:
    model, (src, lengths, tgt_in) = _model(2, attention, dropout=0.3).eval(), _batch()
    with torch.no_grad():
        forced = torch.log_softmax(model(src, lengths, tgt_in).float(), -1)
        enc = model.encode(src, lengths)
        state, stepped = model.init_state(enc), []
        for t in range(tgt_in.size(1)):
            step = model.decode_step(tgt_in[:, t], state, enc)
            stepped.append(step.log_probs)
            state = step.state
    torch.testing.assert_close(forced, torch.stack(stepped, 1), rtol=0, atol=1e-5)


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_the_loops_backward_equals_autograd_through_the_same_forward(num_layers: int) -> None:
    model = _model(num_layers, seed=num_layers)
    decoder, (steps, batch, size, src_len, emb) = model.decoder, (4, 3, 7, 5, 6)
    params = feeding_parameters(decoder.gru, decoder.readout, emb)
    inputs = [torch.randn(steps, batch, 3 * size), torch.randn(steps, batch, emb), torch.randn(num_layers, batch, size),
              torch.randn(batch, emb), torch.randn(batch, src_len, size), torch.randn(batch, src_len, 10)]
    inputs = [x.requires_grad_() for x in inputs]
    mask_bias = torch.zeros(batch, src_len)
    mask_bias[1, 3:] = float("-inf")
    drop = torch.empty(num_layers - 1, steps, batch, size).bernoulli_(0.7).div_(0.7)
    outputs = FeedingRecurrence.apply(*inputs, mask_bias, drop, emb, decoder.gru, decoder.readout, *params)
    weights = FeedingWeights(feed=params[0], hh=params[1:2 * num_layers + 1:2], hh_bias=params[2:2 * num_layers + 1:2],
                             ih=params[2 * num_layers + 1:-1:2], ih_bias=params[2 * num_layers + 2:-1:2],
                             readout=params[-1])
    expected = run_feeding_loop(*inputs, mask_bias, drop, weights)
    differentiable = [0, 1, 2, 4]  # readout, top, context, last hidden (the weights are not differentiable)
    upstream = [torch.randn_like(outputs[i]) for i in differentiable]
    for i in range(5):
        torch.testing.assert_close(outputs[i], expected[i], rtol=0, atol=1e-6)
    ours = torch.autograd.grad([outputs[i] for i in differentiable], inputs + params, upstream)
    reference = torch.autograd.grad([expected[i] for i in differentiable], inputs + params, upstream)
    for index, (grad, expected_grad) in enumerate(zip(ours, reference)):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-5, msg=f"input {index}")


def _hooked(model: Seq2Seq) -> torch.utils.hooks.RemovableHandle:
    return model.decoder.gru.register_forward_hook(lambda *_: None)


@pytest.mark.parametrize("attention", list(ATTENTIONS))
def test_a_checkpoint_decodes_the_same_on_the_fused_and_the_nn_gru_paths(attention: str, make_checkpoint) -> None:
    path = make_checkpoint(model={"attention": attention, "input_feeding": True, "num_layers": 2,
                                  "decoder_hidden_size": 16, "dropout": 0.2})
    model = load_model(path).model
    generator = torch.Generator().manual_seed(1)
    lengths = torch.tensor([9, 4, 7, 1, 6, 9])
    src = torch.randint(4, model.encoder.embedding.num_embeddings, (6, 9), generator=generator)
    src[torch.arange(9)[None, :] >= lengths[:, None]] = 0
    for beam in (1, 5):
        options = DecodeConfig(beam_size=beam, amp="off", max_length_b=12)
        fused = search(model, src, lengths, options)
        handle = _hooked(model)
        stepped = search(model, src, lengths, options)
        handle.remove()
        assert [h[0].tgt_ids for h in fused] == [h[0].tgt_ids for h in stepped]
        assert len({len(h[0].tgt_ids) for h in fused}) > 1  # not every hypothesis ran into the length limit
        torch.testing.assert_close(torch.tensor([h[0].score for h in fused]),
                                   torch.tensor([h[0].score for h in stepped]), rtol=0, atol=1e-5)


def test_training_and_stepping_never_call_the_decoders_nn_gru_unless_it_is_hooked() -> None:
    # Dropout 0: with dropout, training runs nn.GRU layer by layer below its forward (encoder.run_gru).
    model, (src, lengths, tgt_in) = _model(2).train(), _batch()
    assert_decoder_gru_called_only_when_hooked(model, src, lengths, tgt_in)


def test_bf16_autocast_trains_and_searches_with_fp32_state() -> None:
    model, (src, lengths, tgt_in) = _model(2, dropout=0.3).train(), _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(src, lengths, tgt_in)
    logits.float().logsumexp(-1).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        enc = model.encode(src, lengths)
        step = model.decode_step(tgt_in[:, 0], model.init_state(enc), enc)
    assert step.state.hidden.dtype == step.state.feed.dtype == step.log_probs.dtype == torch.float32
    with torch.no_grad():
        enc32 = model.encode(src, lengths)
        step32 = model.decode_step(tgt_in[:, 0], model.init_state(enc32), enc32)
    torch.testing.assert_close(step.log_probs, step32.log_probs, rtol=0, atol=0.1)


def test_a_training_step_leaves_no_reference_cycle_holding_tensors() -> None:
    model, batch = _model(2, dropout=0.3).train(), _batch()
    assert objects_left_in_cycles_by_a_backward(model, batch) == []


def test_each_search_sees_the_weights_a_fused_optimizer_step_changed_in_place() -> None:
    model, (src, lengths, tgt_in) = _model(2), _batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, fused=True)  # bumps no parameter version

    def search_step(m: Seq2Seq) -> torch.Tensor:
        m.eval()  # bf16: the weights arranged for search are copies, which an in-place update leaves behind
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            enc = m.encode(src, lengths)  # a new search: the weights arranged for the last one are dropped
            return m.decode_step(tgt_in[:, 0], m.init_state(enc), enc).log_probs

    before = search_step(model)
    model.train()
    model(src, lengths, tgt_in).logsumexp(-1).mean().backward()
    optimizer.step()
    after = search_step(model)
    torch.testing.assert_close(after, search_step(copy.deepcopy(model)), rtol=0, atol=0)
    assert not torch.allclose(before, after)
