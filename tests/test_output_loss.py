"""The output layer and the label-smoothed loss in one chunked node (``training.loss.output_loss_sums``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from seq2seq.config import ModelConfig
from seq2seq.model.seq2seq import Seq2Seq
from seq2seq.training import loss as loss_module

N, E, V = 11, 6, 13  # 11 rows in chunks of 4: two full chunks and a partial one


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loss_module, "_chunk_rows", lambda vocab_size, device: 4)


def _inputs(bias: bool) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(0)
    features = torch.randn(N, E, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(V, E, dtype=torch.float64, requires_grad=True)
    b = torch.randn(V, dtype=torch.float64, requires_grad=True) if bias else None
    return features, weight, b, torch.randint(0, V, (N,))


@pytest.mark.parametrize("bias", [True, False])
def test_it_equals_the_linear_layer_then_the_loss_in_sums_and_every_gradient(bias: bool) -> None:
    features, weight, b, targets = _inputs(bias)
    features, weight = features.detach().float().requires_grad_(), weight.detach().float().requires_grad_()
    b = None if b is None else b.detach().float().requires_grad_()
    inputs = [t for t in (features, weight, b) if t is not None]
    weights = torch.tensor([0.7, -1.3])  # both sums reach the backward, differently
    expected = loss_module.token_loss_sums(F.linear(features, weight, b), targets, 0.1)
    expected_grads = torch.autograd.grad((expected * weights).sum(), inputs)
    sums = loss_module.output_loss_sums(features, weight, b, targets, 0.1)
    grads = torch.autograd.grad((sums * weights).sum(), inputs)
    torch.testing.assert_close(sums, expected)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad)


def test_gradients_pass_torch_gradcheck() -> None:
    features, weight, b, targets = _inputs(bias=True)
    assert torch.autograd.gradcheck(
        lambda x, w, bb: loss_module.OutputLayerLoss.apply(x, w, bb, targets, 0.2), (features, weight, b))


def test_no_tensor_of_the_logits_size_is_kept_for_the_backward() -> None:
    features, weight, b, targets = _inputs(bias=True)
    shapes: list[tuple[int, ...]] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(tensor.shape))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss_module.output_loss_sums(features, weight, b, targets, 0.1)[0].backward()
    assert shapes and all(torch.Size(shape).numel() < N * V for shape in shapes)  # weight-sized at most
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        shapes.clear()
        loss_module.token_loss_sums(F.linear(features, weight, b), targets, 0.1)[0].backward()
    assert (N, V) in shapes  # what the two-step path keeps


def test_without_gradients_it_returns_the_same_sums() -> None:
    features, weight, b, targets = _inputs(bias=True)
    expected = loss_module.output_loss_sums(features, weight, b, targets, 0.1)
    with torch.no_grad():
        torch.testing.assert_close(loss_module.output_loss_sums(features, weight, b, targets, 0.1), expected)


def test_the_objective_gives_a_tied_model_the_gradients_of_the_full_logits() -> None:
    torch.manual_seed(0)
    model = Seq2Seq.from_config(ModelConfig(embedding_size=8, hidden_size=8, num_layers=1, decoder_hidden_size=16,
                                            attention="bahdanau", dropout=0.0, tied_embeddings=True), 12, 12)
    src, lengths = torch.tensor([[5, 6, 7], [8, 9, 0]]), torch.tensor([3, 2])
    tgt_in, tgt_out = torch.tensor([[1, 5, 6], [1, 7, 0]]), torch.tensor([[5, 6, 2], [7, 2, 0]])
    loss_module.Objective(model, 0.1, 1.0)(src, lengths, tgt_in, tgt_out, 5)[0].backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    logits = model(src, lengths, tgt_in)
    F.cross_entropy(logits.view(-1, 12), tgt_out.view(-1), ignore_index=0, label_smoothing=0.1,
                    reduction="sum").backward()
    assert model.output_layer.weight is model.decoder.embedding.weight
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, msg=name)


def test_under_bf16_autocast_it_stays_close_to_the_two_step_path() -> None:
    torch.manual_seed(0)
    features = torch.randn(40, 32, requires_grad=True)
    weight = (torch.randn(50, 32) * 0.1).requires_grad_()
    b, targets = torch.zeros(50, requires_grad=True), torch.randint(0, 50, (40,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = loss_module.token_loss_sums(F.linear(features, weight, b), targets, 0.1)
        expected_grads = torch.autograd.grad(expected[0], (features, weight, b))
        sums = loss_module.output_loss_sums(features, weight, b, targets, 0.1)
        grads = torch.autograd.grad(sums[0], (features, weight, b))
    assert sums.dtype == torch.float32
    torch.testing.assert_close(sums, expected, rtol=1e-2, atol=0.0)
    for grad, expected_grad in zip(grads, expected_grads):
        assert grad.dtype == expected_grad.dtype
        torch.testing.assert_close(grad, expected_grad, rtol=0.05, atol=0.02 * expected_grad.abs().max().item())


@pytest.mark.parametrize("change, label", [("chunked-loss", "logits, then loss"), ("dropout-masks", "bernoulli_"),
                                           ("packed-loop", "through the padding")])
def test_the_ab_script_times_both_paths(change: str, label: str) -> None:
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "scripts/training_step_ab.py", "--change", change, "--sentences", "4",
                             "--vocab", "300", "--rounds", "1"], cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert " of the time per step" in result.stdout and label in result.stdout
