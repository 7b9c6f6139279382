"""The CUDA paths of training: autocast, the fp16 gradient scaler, pinned memory, no host synchronisation.

Skipped on machines without a CUDA GPU.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from seq2seq.training import batching
from seq2seq.training.loss import Objective
from seq2seq.training.step import build_optimizer, train_step
from seq2seq.checkpoint import load_checkpoint
from seq2seq.config import config_from_dict
from seq2seq.data import prepare
from seq2seq.device import resolve_amp
from seq2seq.training.distributed import DistContext
from seq2seq.training import train

from digits import write_digit_pairs  # tests/digits.py

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]



# The reference shape in miniature: 2 layers, bidirectional encoder, Bahdanau attention (the fused decoder), dropout.
REFERENCE = {"embedding_size": 16, "hidden_size": 16, "num_layers": 2, "decoder_hidden_size": 32, "dropout": 0.3,
             "attention": "bahdanau"}


def _config_dict(tmp_path: Path, model: dict[str, Any] | None = None, **train_changes: Any) -> dict[str, Any]:
    pairs = write_digit_pairs(tmp_path / "pairs.tsv", count=32, seed=2)
    train_section = {"device": "cuda", "batch_size": 300, "lr": 0.01, "scheduler": "constant", "max_steps": 4,
                     "validate_every": 2, "log_every": 2, "patience": 0, "max_epochs": 100}
    train_section.update(train_changes)
    return {"data": {"format": "tsv", "train": str(pairs), "dev": str(pairs), "cache_dir": str(tmp_path / "cache")},
            "tokenizer": {"vocab_size": 64},
            "model": model or {"embedding_size": 16, "hidden_size": 16, "num_layers": 1, "decoder_hidden_size": 32,
                               "dropout": 0.1, "attention": "luong_general"},
            "train": train_section}


def test_auto_amp_is_bf16_where_the_gpu_supports_it_else_fp16_with_a_scaler() -> None:
    amp = resolve_amp("auto", torch.device("cuda"))
    if torch.cuda.is_bf16_supported():
        assert amp.dtype == torch.bfloat16 and not amp.use_scaler
    else:
        assert amp.dtype == torch.float16 and amp.use_scaler
    assert resolve_amp("fp16", torch.device("cuda")).use_scaler


@pytest.mark.parametrize("amp", ["auto", "fp16", "off"])
def test_training_on_cuda_gives_finite_losses_and_fp32_weights(tmp_path: Path, amp: str) -> None:
    result = train(config_from_dict(_config_dict(tmp_path, amp=amp)), tmp_path / "run")
    assert result.steps == 4
    assert all(math.isfinite(loss) for loss in result.losses.values())
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert all(t.dtype == torch.float32 for t in last["model"].values() if t.is_floating_point())
    if amp == "fp16":
        assert "scale" in last["train_state"]["scaler"]  # the scaler's state travels with the run


def test_cuda_run_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    train(config_from_dict(_config_dict(tmp_path, max_steps=2)), tmp_path / "run")
    resumed = train(config_from_dict(_config_dict(tmp_path, max_steps=4)), tmp_path / "run", resume=True)
    assert sorted(resumed.losses) == [3, 4]


def test_batches_travel_through_pinned_memory_and_keep_lengths_on_the_cpu(tmp_path: Path) -> None:
    corpus = prepare(config_from_dict(_config_dict(tmp_path)), verbose=False).train
    host = corpus.collate([0, 1, 2])
    assert host.pin_memory().src_ids.is_pinned()
    moved = batching.to_device(host, torch.device("cuda"))
    assert moved.src_ids.is_cuda and moved.tgt_out_ids.is_cuda
    assert moved.src_lengths.device.type == "cpu"  # pack_padded_sequence wants them there


@pytest.mark.parametrize("model", [None, REFERENCE], ids=["luong", "reference"])
@pytest.mark.parametrize("amp_name", ["bf16", "off"])
def test_a_training_step_never_waits_for_the_gpu(tmp_path: Path, amp_name: str, model: dict | None) -> None:
    from seq2seq.model.seq2seq import Seq2Seq

    if amp_name == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    cfg = config_from_dict(_config_dict(tmp_path, model, amp=amp_name))
    data = prepare(cfg, verbose=False)
    device = torch.device("cuda")
    model = Seq2Seq.from_config(cfg.model, data.tokenizer.src_vocab_size, data.tokenizer.tgt_vocab_size).to(device)
    objective = Objective(model, cfg.train.label_smoothing, cfg.train.teacher_forcing)
    optimizer = build_optimizer(model, cfg.train)
    amp = resolve_amp(amp_name, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp.use_scaler)
    ctx = DistContext(device=device)
    indices = list(range(8))
    batches = [batching.to_device(data.train.collate(indices), device)]
    tokens = batches[0].num_tgt_tokens

    def step() -> torch.Tensor:
        return train_step(objective, optimizer, scaler, batches, tokens, 1e-3, cfg.train, amp, ctx)

    step()  # the first step allocates optimizer state and picks kernels
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        stats = step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert stats.shape == (3,) and stats.is_cuda
    assert torch.isfinite(stats[:2]).all() and stats[2].item() == 0.0


def _tiny_model(attention: str) -> Any:
    from seq2seq.config import ModelConfig
    from seq2seq.model.seq2seq import Seq2Seq

    torch.manual_seed(0)
    settings = {**REFERENCE, "attention": attention}
    return Seq2Seq.from_config(ModelConfig(**settings), 40, 40).cuda()


@pytest.mark.parametrize("attention", ["bahdanau", "luong_general"])
def test_grus_run_in_fp32_under_bf16_autocast_never_fp16(attention: str) -> None:
    from torch.nn.utils.rnn import PackedSequence

    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    model = _tiny_model(attention)
    seen: list[torch.dtype] = []
    for gru in (model.encoder.gru, model.decoder.gru):
        # The output's dtype is the kernel's: autocast casts inside the operator, after a pre-hook looks.
        gru.register_forward_hook(
            lambda module, args, out: seen.append(
                (out[0].data if isinstance(out[0], PackedSequence) else out[0]).dtype))
    src = torch.randint(4, 40, (3, 5), device="cuda")
    lengths, tgt_in = torch.tensor([5, 2, 4]), torch.randint(4, 40, (3, 6), device="cuda")
    for mode in (model.eval, model.train):  # one nn.GRU call, and the per-layer calls of training with dropout
        mode()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            enc = model.encode(src, lengths)
            logits = model(src, lengths, tgt_in)
        assert enc.output.dtype == torch.float32 and enc.h_n.dtype == torch.float32
        assert torch.isfinite(logits.float()).all()
    assert seen and set(seen) == {torch.float32}
    print(f"GRU output dtype under bf16 autocast ({attention}): {sorted(str(d) for d in set(seen))}")


def test_search_on_cuda_decodes_the_fixture_as_recorded_with_one_host_sync_per_step() -> None:
    import warnings

    from seq2seq.config import DecodeConfig, ModelConfig
    from seq2seq.model.seq2seq import Seq2Seq
    from seq2seq.search import search

    fixture = torch.load(Path(__file__).parent / "data" / "bahdanau_nn_gru.pt", weights_only=True)
    model = Seq2Seq.from_config(ModelConfig(**fixture["model_config"]), fixture["vocab"], fixture["vocab"])
    model.load_state_dict(fixture["state_dict"])
    model = model.cuda().eval()
    src, lengths = fixture["src_ids"].cuda(), fixture["src_lengths"]
    for beam in (1, 5):
        options = DecodeConfig(beam_size=beam, amp="off")
        search(model, src, lengths, options)  # warm-up
        marks: list[int] = []
        original = model.decode_step

        def counted(*args: Any) -> Any:
            marks.append(len(caught))
            return original(*args)

        model.decode_step = counted
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                hypotheses = search(model, src, lengths, options)
        finally:
            torch.cuda.set_sync_debug_mode("default")
            del model.decode_step
        assert [h[0].tgt_ids for h in hypotheses] == fixture[f"beam{beam}_ids"]
        syncs_between_steps = [b - a for a, b in zip(marks, marks[1:])]
        assert max(syncs_between_steps) <= 1, syncs_between_steps


def test_reference_model_resumes_bit_for_bit_under_train_deterministic(tmp_path: Path) -> None:
    from seq2seq.training.run import use_deterministic_algorithms

    amp = "bf16" if torch.cuda.is_bf16_supported() else "off"
    settings = dict(amp=amp, deterministic=True)
    try:
        train(config_from_dict(_config_dict(tmp_path, REFERENCE, max_steps=4, **settings)), tmp_path / "full")
        train(config_from_dict(_config_dict(tmp_path, REFERENCE, max_steps=2, **settings)), tmp_path / "split")
        train(config_from_dict(_config_dict(tmp_path, REFERENCE, max_steps=4, **settings)), tmp_path / "split",
              resume=True)
    finally:
        use_deterministic_algorithms(False)
    full = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    resumed = load_checkpoint(tmp_path / "split" / "last.pt")["model"]
    for name, value in full.items():
        assert torch.equal(value, resumed[name]), name


def test_a_nonfinite_update_is_skipped_on_the_gpu_and_leaves_the_weights(tmp_path: Path) -> None:
    from seq2seq.model.seq2seq import Seq2Seq

    cfg = config_from_dict(_config_dict(tmp_path, REFERENCE, amp="off"))
    data = prepare(cfg, verbose=False)
    device = torch.device("cuda")
    model = Seq2Seq.from_config(cfg.model, data.tokenizer.src_vocab_size, data.tokenizer.tgt_vocab_size).to(device)
    objective = Objective(model, cfg.train.label_smoothing, cfg.train.teacher_forcing)
    optimizer = build_optimizer(model, cfg.train)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    batches = [batching.to_device(data.train.collate(list(range(8))), device)]
    step = lambda: train_step(objective, optimizer, scaler, batches, batches[0].num_tgt_tokens, 1e-3,  # noqa: E731
                              cfg.train, resolve_amp("off", device), DistContext(device=device))
    assert step()[2].item() == 0.0
    with torch.no_grad():
        model.decoder.readout.bias[0] = float("nan")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    assert step()[2].item() == 1.0
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, before[name], rtol=0, atol=0, equal_nan=True, msg=name)


@pytest.mark.parametrize("amp", [None, torch.bfloat16, torch.float16])
def test_the_chunked_output_loss_matches_logits_then_loss_on_the_gpu(amp: torch.dtype | None,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from seq2seq.training import loss as loss_module

    monkeypatch.setattr(loss_module, "_chunk_rows", lambda vocab_size, device: 64)  # several chunks of 300 rows
    torch.manual_seed(0)
    features = torch.randn(300, 64, device="cuda", requires_grad=True)
    weight = (torch.randn(500, 64, device="cuda") * 0.1).requires_grad_()
    bias = torch.zeros(500, device="cuda", requires_grad=True)
    targets = torch.randint(0, 500, (300,), device="cuda")
    with torch.autocast("cuda", dtype=amp or torch.float32, enabled=amp is not None):
        expected = loss_module.token_loss_sums(torch.nn.functional.linear(features, weight, bias), targets, 0.1)
        expected_grads = torch.autograd.grad(expected[0], (features, weight, bias))
        sums = loss_module.output_loss_sums(features, weight, bias, targets, 0.1)
        grads = torch.autograd.grad(sums[0], (features, weight, bias))
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if amp is None else {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(sums, expected, **tolerance)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=tolerance["rtol"],
                                   atol=tolerance["atol"] * expected_grad.abs().max().item())
