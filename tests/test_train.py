"""The training loop: it learns, resumes bit for bit, skips non-finite updates, and guards run directories."""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import seq2seq.training.loop as train_module
import seq2seq.training.loss as loss_module
import seq2seq.training.step as step_module
from seq2seq.checkpoint import load_checkpoint, save_checkpoint
from seq2seq.cli import main
from seq2seq.config import Config, TrainConfig, config_from_dict
from seq2seq.device import AmpSettings
from seq2seq.errors import CheckpointError, ConfigError, Seq2SeqError
from seq2seq.training.schedule import PlateauState, lr_at, update_plateau
from seq2seq.training import train



pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


def digits_config(data_dir: Path, **train: Any) -> Config:
    """A model of a few thousand weights on the digit pairs; ``train`` overrides TrainConfig fields."""
    pairs = str(data_dir / "pairs.tsv")
    train_section = {"device": "cpu", "batch_size": 300, "lr": 0.01, "scheduler": "constant",
                     "label_smoothing": 0.0, "max_steps": 6, "validate_every": 3, "log_every": 1,
                     "patience": 0, "max_epochs": 1000, "amp": "off"}
    train_section.update(train)
    return config_from_dict({
        "data": {"format": "tsv", "train": pairs, "dev": pairs, "cache_dir": str(data_dir / "cache")},
        "tokenizer": {"vocab_size": 64},
        "model": {"embedding_size": 16, "hidden_size": 16, "num_layers": 1, "decoder_hidden_size": 32,
                  "dropout": 0.0},
        "train": train_section,
    })


@pytest.mark.slow  # about 10 s on a free CPU core
def test_small_model_overfits_a_few_dozen_pairs(data_dir: Path, tmp_path: Path) -> None:
    cfg = config_from_dict({**_as_dict(digits_config(data_dir)), "model": {
        "embedding_size": 32, "hidden_size": 32, "num_layers": 1, "decoder_hidden_size": 64, "dropout": 0.0}})
    cfg = _with_train(cfg, batch_size=1000, max_steps=150, validate_every=50, log_every=50)
    start = time.perf_counter()
    result = train(cfg, tmp_path / "run")
    assert time.perf_counter() - start < 60
    assert result.best_bleu > 90, result.validations
    assert result.best_checkpoint == tmp_path / "run" / "best.pt"
    best = load_checkpoint(result.best_checkpoint)
    assert "train_state" not in best  # best.pt is for inference: weights, config, tokenizer
    assert {"config.yaml", "train.log", "last.pt"} <= {p.name for p in (tmp_path / "run").iterdir()}


def stateful_config(data_dir: Path, **train: Any) -> Config:
    """The digits run with every kind of state a resume must bring back from last.pt: dropout and
    scheduled sampling draw random numbers, accumulation and the plateau schedule carry state."""
    settings = {"accumulate": 2, "batch_size": 150, "teacher_forcing": 0.5, "scheduler": "plateau",
                "warmup_steps": 2, "plateau_patience": 0, "label_smoothing": 0.1, "max_steps": 6,
                "validate_every": 3, **train}
    cfg = digits_config(data_dir, **settings)
    return config_from_dict({**_as_dict(cfg), "model": {**_as_dict(cfg)["model"], "dropout": 0.3}})


@pytest.fixture(scope="module")
def uninterrupted(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """Six steps of stateful_config in one run, and its run directory: what every resumed run must reproduce."""
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    return train(stateful_config(data_dir), run_dir), run_dir


def test_resume_after_a_signal_reproduces_the_uninterrupted_losses_bit_for_bit(
        data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uninterrupted: tuple[Any, Path]) -> None:
    full, full_dir = uninterrupted
    cfg = stateful_config(data_dir)
    calls = {"n": 0}
    real_step = train_module.train_step

    def step_then_signal(*args: Any, **kwargs: Any) -> torch.Tensor:
        stats = real_step(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            signal.raise_signal(signal.SIGTERM)  # what `kill` or torchrun sends
        return stats

    monkeypatch.setattr(train_module, "train_step", step_then_signal)
    first = train(cfg, tmp_path / "split")
    monkeypatch.setattr(train_module, "train_step", real_step)
    assert first.stop_reason == "interrupted" and first.steps == 2
    second = train(cfg, tmp_path / "split", resume=True)

    assert second.steps == full.steps == 6
    assert {**first.losses, **second.losses} == full.losses  # exact float equality
    assert [v.bleu for v in second.validations] == [v.bleu for v in full.validations]
    _assert_same_weights(full_dir / "last.pt", tmp_path / "split" / "last.pt")


def test_resume_may_raise_max_steps_and_continues_exactly(data_dir: Path, tmp_path: Path,
                                                          uninterrupted: tuple[Any, Path]) -> None:
    full, full_dir = uninterrupted
    train(stateful_config(data_dir, max_steps=3), tmp_path / "split")
    resumed = train(stateful_config(data_dir, max_steps=6), tmp_path / "split", resume=True)
    assert full.losses[6] < full.losses[1]  # it learns
    assert resumed.losses == {step: loss for step, loss in full.losses.items() if step > 3}
    assert [v.bleu for v in resumed.validations] == [v.bleu for v in full.validations if v.step > 3]
    _assert_same_weights(full_dir / "last.pt", tmp_path / "split" / "last.pt")


def test_training_time_adds_up_over_resumed_sessions(data_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = train(digits_config(data_dir, max_steps=3), run_dir)
    saved = load_checkpoint(run_dir / "last.pt")
    assert 0 < saved["train_state"]["train_seconds"] <= first.train_seconds
    saved["train_state"]["train_seconds"] = 7200.0  # as if the first session had trained for two hours
    save_checkpoint(saved, run_dir / "last.pt")
    resumed = train(digits_config(data_dir, max_steps=6), run_dir, resume=True)
    assert 7200 < resumed.train_seconds < 7200 + 600
    assert load_checkpoint(run_dir / "last.pt")["train_state"]["train_seconds"] == resumed.train_seconds
    assert "2h00m of training" in (run_dir / "train.log").read_text().splitlines()[-1]


def test_a_checkpoint_from_before_training_time_was_kept_resumes(data_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(digits_config(data_dir, max_steps=3), run_dir)
    saved = load_checkpoint(run_dir / "last.pt")
    del saved["train_state"]["train_seconds"]
    save_checkpoint(saved, run_dir / "last.pt")
    resumed = train(digits_config(data_dir, max_steps=6), run_dir, resume=True)
    assert resumed.steps == 6 and 0 < resumed.train_seconds < 600  # this session's time only


def test_resume_refuses_a_changed_model_shape_naming_the_key(data_dir: Path, tmp_path: Path) -> None:
    train(digits_config(data_dir, max_steps=1, validate_every=0), tmp_path / "run")
    changed = config_from_dict({**_as_dict(digits_config(data_dir)), "model": {
        **_as_dict(digits_config(data_dir))["model"], "hidden_size": 24}})
    with pytest.raises(ConfigError, match="model.hidden_size"):
        train(changed, tmp_path / "run", resume=True)


def test_an_existing_run_directory_is_refused_without_resume_or_overwrite(data_dir: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "last.pt").write_bytes(b"an earlier run")
    with pytest.raises(Seq2SeqError, match="--resume.*--overwrite") as info:
        train(digits_config(data_dir), run_dir)
    assert str(run_dir) in str(info.value)
    assert (run_dir / "last.pt").read_bytes() == b"an earlier run"

    config_path = tmp_path / "tiny.yaml"
    config_path.write_text("data:\n  format: synthetic\n", encoding="utf-8")
    assert main(["train", str(config_path), "--run-dir", str(run_dir)]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_resume_without_last_checkpoint_is_a_clear_error(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="last.pt.*without --resume"):
        train(digits_config(data_dir), tmp_path / "empty", resume=True)


def test_overwrite_replaces_an_existing_run(data_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "train.log").write_text("old run\n", encoding="utf-8")
    result = train(digits_config(data_dir, max_steps=1, validate_every=0), run_dir, overwrite=True)
    assert result.steps == 1
    assert "old run" not in (run_dir / "train.log").read_text(encoding="utf-8")


def test_non_finite_losses_skip_updates_then_stop_the_run(data_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    real_sums = loss_module.output_loss_sums

    def nan_during_training(*args: Any) -> torch.Tensor:
        sums = real_sums(*args)
        return sums * math.nan if torch.is_grad_enabled() and nan_during_training.on else sums

    nan_during_training.on = False  # type: ignore[attr-defined]
    real_step = train_module.train_step
    calls = {"n": 0}

    def step(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls["n"] += 1
        nan_during_training.on = calls["n"] > 3  # type: ignore[attr-defined]
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loss_module, "output_loss_sums", nan_during_training)
    monkeypatch.setattr(train_module, "train_step", step)
    with pytest.raises(Seq2SeqError, match="2 updates in a row had a non-finite loss") as info:
        train(digits_config(data_dir, max_nonfinite=2, validate_every=3, max_steps=10), tmp_path / "run")
    assert "last.pt" in str(info.value)
    assert "non-finite loss or gradient at step(s) 4" in caplog.text
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert last["train_state"]["step"] == 3  # written at the validation before the faults, then left alone
    assert all(torch.isfinite(t).all() for t in last["model"].values())


def test_a_non_finite_gradient_leaves_weights_and_adam_moments_untouched() -> None:
    model = torch.nn.Linear(3, 2)
    optimizer = step_module.build_optimizer(model, TrainConfig())
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    amp = AmpSettings(dtype=None, use_scaler=False)
    model(torch.ones(1, 3)).sum().backward()
    assert not _optimizer_step(optimizer, scaler, torch.tensor(1.0), amp)
    before = [p.detach().clone() for p in model.parameters()]
    moments = [optimizer.state[p]["exp_avg"].clone() for p in model.parameters()]
    (model(torch.ones(1, 3)).sum() * math.inf).backward()
    assert _optimizer_step(optimizer, scaler, torch.tensor(math.inf), amp)
    for p, old, moment in zip(model.parameters(), before, moments):
        assert torch.equal(p, old)
        assert torch.equal(optimizer.state[p]["exp_avg"], moment)
        assert int(optimizer.state[p]["step"]) == 1


def test_cuda_out_of_memory_names_the_batch_size(data_dir: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_memory(*args: Any, **kwargs: Any) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train_module, "train_step", out_of_memory)
    with pytest.raises(Seq2SeqError, match="train.batch_size=150"):
        train(digits_config(data_dir, batch_size=300), tmp_path / "run")


def test_cpu_bf16_autocast_trains_with_fp32_master_weights(data_dir: Path, tmp_path: Path) -> None:
    # What the Linear layers return in the training forward passes: bf16 only if autocast is on, since
    # every weight and input is float32.
    linear_outputs: list[torch.dtype] = []

    def record(module: torch.nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(module, torch.nn.Linear) and torch.is_grad_enabled():
            linear_outputs.append(output.dtype)

    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        result = train(digits_config(data_dir, amp="bf16", max_steps=3), tmp_path / "run")
    finally:
        hook.remove()
    assert linear_outputs and set(linear_outputs) == {torch.bfloat16}
    assert all(math.isfinite(loss) for loss in result.losses.values())
    weights = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    assert all(t.dtype == torch.float32 for t in weights.values() if t.is_floating_point())


def test_log_has_one_line_per_interval_and_per_validation(data_dir: Path, tmp_path: Path) -> None:
    train(digits_config(data_dir, max_steps=4, log_every=2, validate_every=4), tmp_path / "run")
    lines = (tmp_path / "run" / "train.log").read_text(encoding="utf-8").splitlines()
    steps = [line for line in lines if " step " in line and "tgt tok/s" in line]
    validations = [line for line in lines if "validation at step" in line]
    assert [line.split(" step ")[1].split()[0] for line in steps] == ["2", "4"]
    assert len(validations) == 1 and "BLEU" in validations[0] and "chrF" in validations[0]


def test_lr_warms_up_linearly_then_follows_the_schedule() -> None:
    cfg = TrainConfig(lr=1e-3, warmup_steps=4, scheduler="inverse_sqrt", min_lr=1e-5)
    assert [lr_at(step, cfg) for step in (1, 2, 4)] == pytest.approx([2.5e-4, 5e-4, 1e-3])
    assert lr_at(16, cfg) == pytest.approx(1e-3 * math.sqrt(4 / 16))
    assert lr_at(10**9, cfg) == 1e-5
    constant = TrainConfig(lr=1e-3, scheduler="constant")
    assert lr_at(1, constant) == lr_at(10**6, constant) == 1e-3
    plateau = TrainConfig(lr=1e-3, scheduler="plateau", min_lr=2e-4)
    assert lr_at(10, plateau, plateau_scale=0.5) == 5e-4
    assert lr_at(10, plateau, plateau_scale=0.01) == 2e-4


def test_plateau_halves_the_rate_after_patience_validations_without_gain() -> None:
    cfg = TrainConfig(scheduler="plateau", plateau_factor=0.5, plateau_patience=2)
    state = update_plateau(PlateauState(), 10.0, cfg)
    state = update_plateau(state, 9.0, cfg)
    assert state.scale == 1.0
    state = update_plateau(state, 10.0, cfg)  # no gain over 10.0 either
    assert state.scale == 0.5 and state.bad_validations == 0
    assert update_plateau(state, 11.0, cfg).best_bleu == 11.0
    assert PlateauState.from_state(state.to_state()) == state


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_label_smoothed_loss_and_gradients_match_torch_cross_entropy(smoothing: float) -> None:
    torch.manual_seed(0)
    logits = (3 * torch.randn(2, 3, 7)).requires_grad_()
    tgt_out_ids = torch.tensor([[4, 5, 3], [6, 3, 0]])  # 0 = PAD
    rows = loss_module.real_positions(tgt_out_ids)
    assert rows.tolist() == [0, 1, 2, 3, 4]
    assert loss_module.real_positions(tgt_out_ids, num_tokens=5).tolist() == rows.tolist()

    def no_static_kernel(*args: Any, **kwargs: Any) -> torch.Tensor:
        raise NotImplementedError("no nonzero_static kernel for this backend")  # CUDA before torch 2.6

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "nonzero_static", no_static_kernel)
        assert loss_module.real_positions(tgt_out_ids, num_tokens=5).tolist() == rows.tolist()
    weights = torch.tensor([0.7, -1.3])  # backward of both sums, with different weights
    sums = loss_module.token_loss_sums(logits.view(-1, 7)[rows], tgt_out_ids.view(-1)[rows], smoothing)
    (grad,) = torch.autograd.grad((sums * weights).sum(), logits)

    flat, targets = logits.view(-1, 7), tgt_out_ids.view(-1)
    expected = torch.stack([
        torch.nn.functional.cross_entropy(flat, targets, ignore_index=0, label_smoothing=smoothing, reduction="sum"),
        torch.nn.functional.cross_entropy(flat, targets, ignore_index=0, reduction="sum")])
    (expected_grad,) = torch.autograd.grad((expected * weights).sum(), logits)
    torch.testing.assert_close(sums, expected)
    torch.testing.assert_close(grad, expected_grad)
    # Log-probabilities in place of logits: the same sums and, through log_softmax, the same gradients.
    log_probs = torch.log_softmax(logits, -1)
    sums_lp = loss_module.token_loss_sums(log_probs.view(-1, 7)[rows], targets[rows], smoothing)
    (grad_lp,) = torch.autograd.grad((sums_lp * weights).sum(), logits)
    torch.testing.assert_close(sums_lp, expected)
    torch.testing.assert_close(grad_lp, expected_grad)


def test_the_objective_scores_only_real_positions_and_matches_full_logits() -> None:
    from seq2seq.config import ModelConfig
    from seq2seq.model.seq2seq import Seq2Seq

    torch.manual_seed(0)
    model = Seq2Seq.from_config(ModelConfig(embedding_size=8, hidden_size=8, num_layers=1, decoder_hidden_size=16,
                                            attention="bahdanau", dropout=0.0), 12, 12).eval()
    src = torch.tensor([[5, 6, 7], [8, 9, 0]])
    tgt_in, tgt_out = torch.tensor([[1, 5, 6], [1, 7, 0]]), torch.tensor([[5, 6, 2], [7, 2, 0]])
    sums = loss_module.Objective(model, 0.1, 1.0)(src, torch.tensor([3, 2]), tgt_in, tgt_out, 5)
    logits = model(src, torch.tensor([3, 2]), tgt_in)  # (B, T, V): every position
    expected = torch.nn.functional.cross_entropy(logits.view(-1, 12), tgt_out.view(-1), ignore_index=0,
                                                 label_smoothing=0.1, reduction="sum")
    torch.testing.assert_close(sums[0], expected)


def _as_dict(cfg: Config) -> dict[str, Any]:
    from seq2seq.config import config_to_dict

    return config_to_dict(cfg)


def _with_train(cfg: Config, **changes: Any) -> Config:
    raw = _as_dict(cfg)
    raw["train"].update(changes)
    return config_from_dict(raw)


def _assert_same_weights(path_a: Path, path_b: Path) -> None:
    a, b = load_checkpoint(path_a)["model"], load_checkpoint(path_b)["model"]
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def _optimizer_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loss_sum: torch.Tensor,
                    amp: AmpSettings) -> torch.Tensor:
    """What train_step does after the backward passes: clip to norm 1, then the guarded update."""
    return step_module._apply_update(optimizer, scaler, loss_sum, step_module._unscale_and_clip(optimizer, scaler, 1.0),
                                     amp)
