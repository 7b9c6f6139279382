"""Training: ``train(cfg, run_dir)`` runs the loop, validates, stops early and resumes exactly.

One update ("step") sums the gradients of ``accumulate`` token-bounded batches per process
(``world_size`` processes under torchrun) and divides by the target tokens of all of them, so
its gradient is that of the mean loss per target token however the batches are split.
Losses stay on the device between log lines: the host reads them once per ``log_every`` steps.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from . import distributed as dist_utils
from .checkpoint import (build_checkpoint, capture_rng_state, clear_run, config_of, open_run, restore_rng_state,
                         resume_config, save_checkpoint)
from .config import Config, TrainConfig, save_config
from .device import AmpSettings, resolve_amp
from .distributed import DistContext
from .errors import CheckpointError, DataError, Seq2SeqError
from .progress import Reporter, Validation
from .schedule import PlateauState, lr_at, update_plateau

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What one call of :func:`train` did. ``losses`` maps each step it ran to its mean loss per target token."""

    best_bleu: float
    steps: int
    epochs: int  # completed epochs
    stop_reason: str  # max_steps | max_epochs | patience | interrupted
    last_checkpoint: Path
    best_checkpoint: Path | None
    losses: dict[int, float] = field(default_factory=dict)
    validations: list[Validation] = field(default_factory=list)


@dataclass
class TrainState:
    """Everything the loop changes; it goes into ``last.pt`` so that ``--resume`` continues exactly."""

    step: int = 0
    epoch: int = 0  # completed epochs
    batches_done: int = 0  # of the current epoch's batch order, over all processes
    best_bleu: float = -math.inf
    bad_validations: int = 0  # validations since the best one (early stopping)
    last_validated: int = -1  # the step of the latest validation
    plateau: PlateauState = field(default_factory=PlateauState)


@dataclass
class _Run:
    """The objects one training run works on (built once by :func:`_build_run`)."""

    cfg: Config
    run_dir: Path
    ctx: DistContext
    amp: AmpSettings
    data: Any  # PreparedData
    model: nn.Module  # Seq2Seq
    objective: Objective
    wrapped: nn.Module  # the objective, in DistributedDataParallel when there are several processes
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    state: TrainState
    reporter: Reporter


def train(cfg: Config, run_dir: str | Path, resume: bool = False, overwrite: bool = False) -> TrainResult:
    """Train ``cfg`` end to end; writes RUN_DIR/last.pt, best.pt, config.yaml and train.log."""
    run_dir = Path(run_dir)
    checkpoint = open_run(run_dir, resume, overwrite)
    if checkpoint is not None:
        cfg = resume_config(config_of(checkpoint, run_dir / "last.pt"), cfg, run_dir / "last.pt")
    ctx = dist_utils.init_distributed(cfg.train.device)
    try:
        if ctx.is_main and overwrite:
            clear_run(run_dir)
        dist_utils.barrier(ctx)
        run = _build_run(cfg, run_dir, checkpoint, ctx)
        with _stop_signals() as stop_flag, run.reporter:
            return _finish(run, _loop(run, stop_flag))
    finally:
        dist_utils.shutdown_distributed(ctx)


def _build_run(cfg: Config, run_dir: Path, checkpoint: dict[str, Any] | None, ctx: DistContext) -> _Run:
    """Seed, data, model, optimizer, and the state of the checkpoint being resumed, if any."""
    from .model.seq2seq import Seq2Seq

    tcfg = cfg.train
    _seed_everything(tcfg.seed + ctx.rank)
    amp = resolve_amp(tcfg.amp, ctx.device)
    data = _prepare_data(cfg, checkpoint, ctx)
    model = Seq2Seq.from_config(cfg.model, data.tokenizer.src_vocab_size, data.tokenizer.tgt_vocab_size)
    model.to(ctx.device)
    objective = Objective(model, tcfg.label_smoothing, tcfg.teacher_forcing)
    optimizer = build_optimizer(model, tcfg)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=amp.use_scaler)
    state = TrainState() if checkpoint is None else _restore(checkpoint, model, optimizer, scaler, ctx)
    wrapped = DistributedDataParallel(objective) if ctx.is_distributed else objective
    reporter = Reporter(run_dir, tcfg, ctx, steps_per_epoch=len(_epoch_groups(data.train, tcfg, 0, ctx)),
                        start_step=state.step)
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    return _Run(cfg=cfg, run_dir=run_dir, ctx=ctx, amp=amp, data=data, model=model, objective=objective,
                wrapped=wrapped, optimizer=optimizer, scaler=scaler, state=state, reporter=reporter)


def _loop(run: _Run, stop_flag: _StopFlag) -> str:
    """Update until a limit, early stopping or a signal; returns why it stopped."""
    tcfg, state = run.cfg.train, run.state
    run.reporter.info(f"training on {run.ctx.device} ({run.ctx.world_size} process(es)), amp "
                      f"{run.amp.dtype or 'off'}, from step {state.step}; config in {run.run_dir / 'config.yaml'}")
    if run.data.dev is None:
        run.reporter.warning("no dev split (data.dev): no validation, no early stopping and no best.pt")
    stop = None
    while stop is None and state.epoch < tcfg.max_epochs:
        for group in _remaining_groups(run.data.train, tcfg, state, run.ctx):
            lr = lr_at(state.step + 1, tcfg, state.plateau.scale)
            num_tokens = _target_tokens(run.data.train, group)
            stats = _guarded_step(run, group, num_tokens, lr)
            state.step += 1
            state.batches_done += len(group)
            run.reporter.record(state.step, stats, num_tokens, lr)
            if state.step % tcfg.log_every == 0:
                stop = run.reporter.flush(state, stop_flag.requested)
            if tcfg.validate_every and state.step % tcfg.validate_every == 0 and _validate_and_save(run):
                stop = stop or "patience"
            if tcfg.max_steps and state.step >= tcfg.max_steps:
                stop = stop or "max_steps"
            if stop_flag.requested and not run.ctx.is_distributed:
                stop = stop or "interrupted"  # several processes agree on it at the next log line instead
            if stop is not None:
                break
        else:
            state.epoch += 1
            state.batches_done = 0
            if tcfg.validate_every == 0 and _validate_and_save(run):
                stop = "patience"
    return run.reporter.flush(state, stop_flag.requested) or stop or "max_epochs"


def _finish(run: _Run, stop: str) -> TrainResult:
    """Validate the final weights if the last step was not, save last.pt, and say what happened."""
    state, run_dir = run.state, run.run_dir
    if stop != "interrupted" and state.last_validated != state.step:
        _validate_and_save(run)
    last = _save_last(run)
    if stop == "interrupted":
        run.reporter.info(f"interrupted at step {state.step}: saved {last}; continue with --resume "
                          f"--run-dir {run_dir}")
    else:
        best_text = (f"best dev BLEU {state.best_bleu:.2f}" if math.isfinite(state.best_bleu)
                     else "no dev set, so no best.pt")
        run.reporter.info(f"stopped ({stop}) after {state.step} steps; {best_text}; checkpoints in {run_dir}")
    best = run_dir / "best.pt"
    return TrainResult(best_bleu=state.best_bleu, steps=state.step, epochs=state.epoch, stop_reason=stop,
                       last_checkpoint=last, best_checkpoint=best if best.is_file() else None,
                       losses=run.reporter.losses, validations=run.reporter.validations)


class Objective(nn.Module):
    """The training loss of a Seq2Seq. DDP wraps this module, so both teacher-forcing paths average gradients.

    With ``teacher_forcing`` 1 (or in eval mode) the whole target runs through ``forward``;
    below 1 it steps with ``decode_step``, feeding at each position the reference token with
    that probability and otherwise a token sampled from the model (scheduled sampling,
    Bengio et al. 2015).
    """

    def __init__(self, model: nn.Module, label_smoothing: float, teacher_forcing: float) -> None:
        super().__init__()
        self.model = model
        self.label_smoothing = label_smoothing
        self.teacher_forcing = teacher_forcing

    def forward(self, src_ids: Tensor, src_lengths: Tensor, tgt_in_ids: Tensor, tgt_out_ids: Tensor) -> Tensor:
        """(B, S), (B,), (B, T), (B, T) -> (2,) float32: label-smoothed loss and NLL, summed over real tokens."""
        if self.training and self.teacher_forcing < 1.0:
            log_probs = self._scheduled_sampling(src_ids, src_lengths, tgt_in_ids)
        else:
            log_probs = torch.log_softmax(self.model(src_ids, src_lengths, tgt_in_ids).float(), dim=-1)
        return token_loss_sums(log_probs, tgt_out_ids, self.label_smoothing)

    def _scheduled_sampling(self, src_ids: Tensor, src_lengths: Tensor, tgt_in_ids: Tensor) -> Tensor:
        """-> log_probs (B, T, V) float32, stepping the decoder one token at a time."""
        enc = self.model.encode(src_ids, src_lengths)
        state = self.model.init_state(enc)
        prev_ids = tgt_in_ids[:, 0]
        steps = []
        for t in range(tgt_in_ids.size(1)):
            log_probs, state, _ = self.model.decode_step(prev_ids, state, enc)
            steps.append(log_probs.float())
            if t + 1 < tgt_in_ids.size(1):
                sampled = torch.multinomial(log_probs.detach().float().exp(), 1).squeeze(1)
                use_reference = torch.rand(sampled.shape, device=sampled.device) < self.teacher_forcing
                prev_ids = torch.where(use_reference, tgt_in_ids[:, t + 1], sampled)
        return torch.stack(steps, dim=1)


def token_loss_sums(log_probs: Tensor, tgt_out_ids: Tensor, label_smoothing: float) -> Tensor:
    """log_probs (B, T, V), tgt_out_ids (B, T) -> (2,): label-smoothed loss and NLL summed over non-PAD tokens.

    Smoothing spreads ``label_smoothing`` uniformly over the vocabulary, as
    ``F.cross_entropy(label_smoothing=...)`` does: (1 - e) * nll + e * mean_v(-log p_v).
    """
    from .tokenizer import PAD_ID

    mask = tgt_out_ids != PAD_ID
    nll = -log_probs.gather(-1, tgt_out_ids.unsqueeze(-1)).squeeze(-1)
    smoothed = (1.0 - label_smoothing) * nll - label_smoothing * log_probs.mean(dim=-1)
    return torch.stack([smoothed.masked_fill(~mask, 0.0).sum(), nll.masked_fill(~mask, 0.0).sum()])


def train_step(wrapped: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               batches: list[Any], num_tokens: int, lr: float, tcfg: TrainConfig, amp: AmpSettings,
               ctx: DistContext) -> Tensor:
    """One update from this process's batches -> (3,) on the device: loss sum, NLL sum, 1 if the update was skipped."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    # DDP averages gradients over processes: scaling by world_size / tokens-of-all-processes makes the
    # result the gradient of the mean loss per target token, exactly what one process accumulating
    # the same batches computes.
    loss_scale = ctx.world_size / num_tokens
    sums = []
    for i, batch in enumerate(batches):
        accumulating = ctx.is_distributed and i < len(batches) - 1
        with wrapped.no_sync() if accumulating else contextlib.nullcontext():  # one all-reduce per update
            with torch.autocast(ctx.device.type, dtype=amp.dtype, enabled=amp.enabled):
                batch_sums = wrapped(batch.src_ids, batch.src_lengths, batch.tgt_in_ids, batch.tgt_out_ids)
            scaler.scale(batch_sums[0] * loss_scale).backward()
        sums.append(batch_sums.detach())
    total = torch.stack(sums).sum(dim=0)
    skipped = _optimizer_step(optimizer, scaler, total[0], tcfg.clip_norm, amp)
    return torch.cat([total, skipped.float().reshape(1)])


def _optimizer_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loss_sum: Tensor,
                    clip_norm: float, amp: AmpSettings) -> Tensor:
    """Clip and apply the gradients unless they are not finite; returns the 0-dim 'skipped' flag, on the device."""
    scaler.unscale_(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = nn.utils.clip_grad_norm_(params, clip_norm if clip_norm > 0 else math.inf)
    if amp.use_scaler:
        # The scaler skips overflowing fp16 steps itself and lowers its scale: that is routine, so only
        # a non-finite loss counts as a fault.
        scaler.step(optimizer)
        scaler.update()
        skipped = ~torch.isfinite(loss_sum)
    else:
        skipped = ~torch.isfinite(grad_norm)
        # Fused Adam reads found_inf on the device and leaves weights and moments untouched when it is
        # 1 (the protocol GradScaler uses), so a bad update is skipped without waiting for the GPU.
        optimizer.found_inf, optimizer.grad_scale = skipped.float(), None
        optimizer.step()
        del optimizer.found_inf, optimizer.grad_scale
    optimizer.zero_grad(set_to_none=True)
    return skipped


def _guarded_step(run: _Run, group: list[list[int]], num_tokens: int, lr: float) -> Tensor:
    """:func:`train_step` on this process's share of ``group``; running out of GPU memory becomes advice."""
    corpus, device = run.data.train, run.ctx.device
    batches = [_to_device(corpus.collate(indices), device) for indices in dist_utils.rank_share(group, run.ctx)]
    try:
        return train_step(run.wrapped, run.optimizer, run.scaler, batches, num_tokens, lr, run.cfg.train,
                          run.amp, run.ctx)
    except torch.OutOfMemoryError as exc:
        tcfg = run.cfg.train
        raise Seq2SeqError(
            f"{device} ran out of memory on batches of up to {tcfg.batch_size} {tcfg.batch_by} "
            f"(train.batch_size); try --set train.batch_size={max(tcfg.batch_size // 2, 1)}, with "
            f"--set train.accumulate={tcfg.accumulate * 2} to keep the same tokens per update") from exc


def _to_device(batch: Any, device: torch.device) -> Any:
    """Pinned host memory lets the copy to the GPU run asynchronously with the computation."""
    if device.type != "cuda":
        return batch
    return batch.pin_memory().to(device, non_blocking=True)


def _remaining_groups(corpus: Any, tcfg: TrainConfig, state: TrainState, ctx: DistContext
                      ) -> Iterator[list[list[int]]]:
    """The update groups of the current epoch not yet done (after a resume, from where it stopped)."""
    per_update = ctx.world_size * tcfg.accumulate
    groups = _epoch_groups(corpus, tcfg, state.epoch, ctx)
    # A resume with another number of processes continues at the next whole update.
    yield from groups[-(-state.batches_done // per_update):]


def _epoch_groups(corpus: Any, tcfg: TrainConfig, epoch: int, ctx: DistContext) -> list[list[list[int]]]:
    """The epoch's batch order cut into updates of ``world_size * accumulate`` batches."""
    order = corpus.batch_order(tcfg.batch_size, tcfg.batch_by, shuffle=True, seed=tcfg.seed, epoch=epoch)
    if len(order) < ctx.world_size:
        raise DataError(f"the training data make {len(order)} batch(es) of train.batch_size={tcfg.batch_size}, "
                        f"fewer than the {ctx.world_size} processes; use a smaller batch size or fewer processes")
    order = order[: len(order) - len(order) % ctx.world_size]  # every process gets as many batches
    per_update = ctx.world_size * tcfg.accumulate
    return [order[i:i + per_update] for i in range(0, len(order), per_update)]


def _target_tokens(corpus: Any, group: list[list[int]]) -> int:
    """Real target tokens (EOS included) in all batches of an update, known to every process without talking."""
    return sum(len(corpus.tgt_ids[i]) + 1 for indices in group for i in indices)


def validate(model: nn.Module, objective: Objective, dev: Any, tokenizer: Any, cfg: Config, amp: AmpSettings,
             device: torch.device, step: int = 0) -> Validation:
    """Teacher-forced dev loss, and sacrebleu BLEU / chrF of greedy translations against the raw references."""
    from .evaluate import score_corpus
    from .search import greedy_search

    start = time.perf_counter()
    objective.eval()
    sums, num_tokens = torch.zeros(2, device=device), 0
    hyps = [""] * len(dev)
    order = dev.batch_order(cfg.train.batch_size, cfg.train.batch_by, shuffle=False, seed=0, epoch=0)
    with torch.no_grad(), torch.autocast(device.type, dtype=amp.dtype, enabled=amp.enabled):
        for indices in order:
            batch = dev.collate(indices).to(device)
            sums += objective(batch.src_ids, batch.src_lengths, batch.tgt_in_ids, batch.tgt_out_ids)
            num_tokens += batch.num_tgt_tokens
            for index, hyp in zip(batch.indices, greedy_search(model, batch.src_ids, batch.src_lengths, cfg.decode)):
                hyps[int(index)] = tokenizer.decode_tgt(hyp.tgt_ids)
    objective.train()
    scores = score_corpus(hyps, list(dev.tgt_text))
    loss = sums[1].item() / max(num_tokens, 1)
    return Validation(step=step, loss=loss, ppl=math.exp(min(loss, 100.0)), bleu=scores.bleu, chrf=scores.chrf,
                      seconds=time.perf_counter() - start)


def _validate_and_save(run: _Run) -> bool:
    """Validate (process 0), keep best.pt and the schedules up to date, save last.pt; True = patience ran out."""
    state, tcfg = run.state, run.cfg.train
    state.last_validated = state.step
    patience_out = 0.0
    if run.ctx.is_main and run.data.dev is not None:
        result = validate(run.model, run.objective, run.data.dev, run.data.tokenizer, run.cfg, run.amp,
                          run.ctx.device, state.step)
        improved = result.bleu > state.best_bleu
        state.best_bleu = max(state.best_bleu, result.bleu)
        state.bad_validations = 0 if improved else state.bad_validations + 1
        if tcfg.scheduler == "plateau":
            state.plateau = update_plateau(state.plateau, result.bleu, tcfg)
        run.reporter.validation(result, state.best_bleu)
        if improved:
            save_checkpoint(_checkpoint(run, train_state=None), run.run_dir / "best.pt")
        patience_out = float(tcfg.patience > 0 and state.bad_validations >= tcfg.patience)
    # Only process 0 validates: the others take its learning-rate scale and its stopping decision.
    state.plateau.scale, patience_out = dist_utils.broadcast_floats([state.plateau.scale, patience_out], run.ctx)
    _save_last(run)
    return patience_out > 0


def _checkpoint(run: _Run, train_state: dict[str, Any] | None) -> dict[str, Any]:
    return build_checkpoint(run.cfg, run.model.state_dict(), run.data.tokenizer.to_state(), train_state)


def _save_last(run: _Run) -> Path:
    """Write last.pt with everything resuming needs, the RNG states of every process included."""
    rng_states = dist_utils.gather_objects(capture_rng_state(), run.ctx)
    path = run.run_dir / "last.pt"
    if run.ctx.is_main:
        state = run.state
        train_state = {"step": state.step, "epoch": state.epoch, "batches_done": state.batches_done,
                       "best_bleu": state.best_bleu, "bad_validations": state.bad_validations,
                       "last_validated": state.last_validated, "plateau": state.plateau.to_state(),
                       "optimizer": run.optimizer.state_dict(), "scaler": run.scaler.state_dict(),
                       "rng": rng_states}
        save_checkpoint(_checkpoint(run, train_state), path)
    return path


def _restore(checkpoint: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
             scaler: torch.amp.GradScaler, ctx: DistContext) -> TrainState:
    """Load weights, optimizer, scaler and RNG states from last.pt; returns the loop's state."""
    saved = checkpoint["train_state"]
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if saved["scaler"] and scaler.is_enabled():
        scaler.load_state_dict(saved["scaler"])
    rng_states = saved["rng"]
    restore_rng_state(rng_states[ctx.rank] if ctx.rank < len(rng_states) else rng_states[0])
    return TrainState(step=saved["step"], epoch=saved["epoch"], batches_done=saved["batches_done"],
                      best_bleu=saved["best_bleu"], bad_validations=saved["bad_validations"],
                      last_validated=saved["last_validated"], plateau=PlateauState.from_state(saved["plateau"]))


def _prepare_data(cfg: Config, checkpoint: dict[str, Any] | None, ctx: DistContext) -> Any:
    """data.prepare(cfg); process 0 goes first so that the others load its cached tokenizer instead of racing."""
    from .data import prepare
    from .tokenizer import Tokenizer

    if not ctx.is_main:
        dist_utils.barrier(ctx)
    data = prepare(cfg, verbose=ctx.is_main)
    if ctx.is_main:
        dist_utils.barrier(ctx)
    if len(data.train) == 0:
        raise DataError("the training split is empty after filtering; check data.train and data.max_length")
    if checkpoint is not None and Tokenizer.from_state(checkpoint["tokenizer"]).fingerprint() != \
            data.tokenizer.fingerprint():
        raise CheckpointError("the data now yield another tokenizer than the one in last.pt (did the training "
                              "text change?); resuming would not continue the same run")
    return data


def build_optimizer(model: nn.Module, tcfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam or AdamW, fused: one kernel per step, and it can skip a non-finite update on the device."""
    kind = torch.optim.AdamW if tcfg.optimizer == "adamw" else torch.optim.Adam
    return kind(model.parameters(), lr=tcfg.lr, betas=(tcfg.betas[0], tcfg.betas[1]),
                weight_decay=tcfg.weight_decay, fused=True)


def _seed_everything(seed: int) -> None:
    """The one place training seeds: Python, NumPy (if present) and torch (CPU and every GPU)."""
    random.seed(seed)
    torch.manual_seed(seed)
    with contextlib.suppress(ImportError):
        import numpy as np

        np.random.seed(seed)


@dataclass
class _StopFlag:
    requested: bool = False


@contextlib.contextmanager
def _stop_signals() -> Iterator[_StopFlag]:
    """SIGINT / SIGTERM ask the loop to stop after the current step (it then saves last.pt); a second one aborts."""
    flag = _StopFlag()

    def handle(signum: int, frame: Any) -> None:
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True

    previous = {}
    if threading.current_thread() is threading.main_thread():  # Python only allows handlers there
        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
