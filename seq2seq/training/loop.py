"""Training: ``train(cfg, run_dir)`` runs the loop, validates, stops early and resumes exactly.

One update ("step") sums the gradients of ``accumulate`` token-bounded batches per process
(``world_size`` processes under torchrun) and divides by the target tokens of all of them, so
its gradient is that of the mean loss per target token however the batches are split.
Losses stay on the device between log lines: the host reads them once per ``log_every`` steps.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import build_checkpoint, config_of, load_matching_checkpoint, save_checkpoint
from ..config import Config, config_to_dict, replace_config, save_config
from ..data import PreparedData, Tokenizer, prepare
from ..data.subwords import SubwordSampler
from ..device import AmpSettings, resolve_amp
from ..errors import CheckpointError, DataError, Seq2SeqError, StorageError
from ..logs import format_duration
from ..model import Seq2Seq
from . import distributed as dist_utils
from .batching import epoch_groups, remaining_groups, target_tokens, to_device
from .distributed import DistContext
from .kept import keep_best, keep_latest
from .loss import Objective
from .lock import hold_run_dir
from .progress import Reporter
from .run import (StopFlag, TrainState, capture_rng_state, check_resume_device, clear_run, describe_survivors,
                  open_run, restore_training, resume_config, seed_everything, stop_signals, training_state,
                  use_deterministic_algorithms)
from .schedule import lr_at, update_plateau
from .step import build_optimizer, train_step
from .validation import Validation, stop_score, validate

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
    exit_status: int = 0  # 128 + the signal that stopped the run (130 SIGINT, 143 SIGTERM), else 0
    train_seconds: float = 0.0  # wall time of every session of the run, earlier ones (--resume) included


@dataclass
class _Run:
    """The objects one training run works on (built once by :func:`_build_run`)."""

    cfg: Config
    run_dir: Path
    ctx: DistContext
    amp: AmpSettings
    data: PreparedData
    model: Seq2Seq
    objective: Objective
    wrapped: nn.Module  # the objective, in DistributedDataParallel when there are several processes
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    state: TrainState
    reporter: Reporter
    subwords: SubwordSampler | None = None  # tokenizer.sampling_alpha > 0: training batches re-segmented


def train(cfg: Config, run_dir: str | Path, resume: bool = False, overwrite: bool = False,
          command: str | None = None) -> TrainResult:
    """Train ``cfg`` end to end; writes RUN_DIR/last.pt, best.pt, config.yaml and train.log.

    The run holds the lock on ``run_dir`` throughout; a failed write names what it kept.
    ``command`` (the command line that asked for the run) goes into train.log, where
    ``seq2seq export`` finds it for the model card.

    >>> result = train(load_config("quickstart", ["train.max_steps=5"]), "runs/demo")  # doctest: +SKIP
    >>> result.stop_reason, result.steps  # doctest: +SKIP
    ('max_steps', 5)
    """
    run_dir = Path(run_dir)
    with hold_run_dir(run_dir):
        try:
            return _train(cfg, run_dir, resume, overwrite, command)
        except StorageError as exc:
            raise StorageError(f"{exc}. {describe_survivors(run_dir)}") from exc


def _train(cfg: Config, run_dir: Path, resume: bool, overwrite: bool, command: str | None) -> TrainResult:
    checkpoint = open_run(run_dir, resume, overwrite)
    if checkpoint is not None:
        stored = config_of(checkpoint, run_dir / "last.pt")
        if not cfg.train.init_from:  # a fine-tuning run resumes without repeating --init-from
            cfg = replace_config(cfg, "train", init_from=stored.train.init_from)
        cfg = resume_config(stored, cfg, run_dir / "last.pt")
        check_resume_device(checkpoint, cfg, run_dir / "last.pt")
    ctx = dist_utils.init_distributed(cfg.train.device)
    try:
        if ctx.is_main and overwrite:
            clear_run(run_dir)
        dist_utils.barrier(ctx)
        run = _build_run(cfg, run_dir, checkpoint, ctx)
        with stop_signals() as stop_flag, run.reporter:
            if command:
                run.reporter.info(f"command: {command}")
            result = _finish(run, _loop(run, stop_flag))
        result.exit_status = stop_flag.exit_status if result.stop_reason == "interrupted" else 0
        return result
    finally:
        dist_utils.shutdown_distributed(ctx)


def _build_run(cfg: Config, run_dir: Path, checkpoint: dict[str, Any] | None, ctx: DistContext) -> _Run:
    """Seed, data, model, optimizer, and the state of the checkpoint being resumed, if any."""
    tcfg = cfg.train
    seed_everything(tcfg.seed + ctx.rank)
    use_deterministic_algorithms(tcfg.deterministic)
    amp = resolve_amp(tcfg.amp, ctx.device)
    init = load_matching_checkpoint(tcfg.init_from, cfg.model) if checkpoint is None and tcfg.init_from else None
    # Fine-tuning encodes the data with the tokenizer of the checkpoint it started from (last.pt keeps it).
    given = Tokenizer.from_state((checkpoint or init or {})["tokenizer"]) if tcfg.init_from else None
    data = _prepare_data(cfg, checkpoint, ctx, given)
    model = Seq2Seq.from_config(cfg.model, data.tokenizer.src_vocab_size, data.tokenizer.tgt_vocab_size)
    if init is not None:
        model.load_state_dict(init["model"])
        logger.info("fine-tuning from %s: its weights and tokenizer, a fresh optimizer and step count", tcfg.init_from)
    model.to(ctx.device)
    objective = Objective(model, tcfg.label_smoothing, tcfg.teacher_forcing)
    optimizer = build_optimizer(model, tcfg)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=amp.use_scaler)
    state = TrainState() if checkpoint is None else restore_training(checkpoint, model, optimizer, scaler, ctx.rank)
    wrapped = DistributedDataParallel(objective) if ctx.is_distributed else objective
    reporter = Reporter(run_dir, tcfg, ctx, steps_per_epoch=len(epoch_groups(data.train, tcfg, 0, ctx)),
                        start_step=state.step, config_yaml=yaml.safe_dump(config_to_dict(cfg), sort_keys=False),
                        start_seconds=state.train_seconds)
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    subwords = SubwordSampler.for_training(cfg.tokenizer, data.tokenizer, data.train, cfg.data.max_length,
                                           tcfg.seed + ctx.rank)
    return _Run(cfg=cfg, run_dir=run_dir, ctx=ctx, amp=amp, data=data, model=model, objective=objective,
                wrapped=wrapped, optimizer=optimizer, scaler=scaler, state=state, reporter=reporter,
                subwords=subwords)


def _loop(run: _Run, stop_flag: StopFlag) -> str:
    """Update until a limit, early stopping or a signal; returns why it stopped."""
    tcfg, state = run.cfg.train, run.state
    run.reporter.info(f"training on {run.ctx.device} ({run.ctx.world_size} process(es)), amp "
                      f"{run.amp.dtype or 'off'}, from step {state.step}; config in {run.run_dir / 'config.yaml'}")
    if run.data.dev is None:
        run.reporter.warning("no dev split (data.dev): no validation, no early stopping and no best.pt")
    stop = None
    while stop is None and state.epoch < tcfg.max_epochs:
        for group in remaining_groups(run.data.train, tcfg, state, run.ctx):
            lr = lr_at(state.step + 1, tcfg, state.plateau.scale)
            num_tokens = target_tokens(run.data.train, group)
            stats = _guarded_step(run, group, num_tokens, lr)
            state.step += 1
            state.batches_done += len(group)
            run.reporter.record(state.step, stats, num_tokens, lr)
            if state.step % tcfg.log_every == 0:
                stop = run.reporter.flush(state, stop_flag.requested)
            if tcfg.validate_every and state.step % tcfg.validate_every == 0 and _validate_and_save(run):
                stop = stop or "patience"
            if tcfg.save_every and state.step % tcfg.save_every == 0 and state.last_validated != state.step:
                _save_last(run)  # an epoch of a large corpus is hours: a killed run must not lose them
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
        if math.isfinite(state.best_score) and run.cfg.train.stop_metric != "bleu":
            best_text += f" (best.pt by {run.cfg.train.stop_metric})"
        epochs = f"{state.epoch} full epoch{'' if state.epoch == 1 else 's'}"
        run.reporter.info(f"stopped ({stop}) after {state.step} steps ({epochs}, "
                          f"{format_duration(state.train_seconds)} of training); {best_text}; checkpoints in {run_dir}")
    best = run_dir / "best.pt"
    return TrainResult(best_bleu=state.best_bleu, steps=state.step, epochs=state.epoch, stop_reason=stop,
                       last_checkpoint=last, best_checkpoint=best if best.is_file() else None,
                       losses=run.reporter.losses, validations=run.reporter.validations,
                       train_seconds=state.train_seconds)


def _guarded_step(run: _Run, group: list[list[int]], num_tokens: int, lr: float) -> Tensor:
    """:func:`train_step` on this process's share of ``group``; running out of GPU memory becomes advice."""
    corpus, device = run.data.train, run.ctx.device
    if run.subwords is not None:
        # The loss stays divided by the stored segmentation's target tokens (num_tokens), which every
        # process knows without talking; sampled segmentations differ from it by a few pieces.
        run.subwords.reseed(run.state.step + 1)
    batches = [to_device(corpus.collate(indices, run.subwords), device)
               for indices in dist_utils.rank_share(group, run.ctx)]
    try:
        return train_step(run.wrapped, run.optimizer, run.scaler, batches, num_tokens, lr, run.cfg.train,
                          run.amp, run.ctx)
    except torch.OutOfMemoryError as exc:
        tcfg = run.cfg.train
        raise Seq2SeqError(
            f"{device} ran out of memory on batches of up to {tcfg.batch_size} {tcfg.batch_by} "
            f"(train.batch_size); try --set train.batch_size={max(tcfg.batch_size // 2, 1)}, with "
            f"--set train.accumulate={tcfg.accumulate * 2} to keep the same tokens per update") from exc


def _validate_and_save(run: _Run) -> bool:
    """Validate (process 0), keep best.pt and the schedules up to date, save last.pt; True = patience ran out."""
    state, tcfg = run.state, run.cfg.train
    state.last_validated = state.step
    patience_out = 0.0
    if run.ctx.is_main and run.data.dev is not None:
        result = validate(run.model, run.objective, run.data.dev, run.data.tokenizer, run.cfg, run.amp,
                          run.ctx.device, state.step)
        score = stop_score(result, tcfg.stop_metric)  # higher is better, whichever the metric
        improved = math.isfinite(result.loss) and score > state.best_score  # diverged weights are no best
        state.best_score = score if improved else state.best_score
        state.best_bleu = max(state.best_bleu, result.bleu) if math.isfinite(result.loss) else state.best_bleu
        state.bad_validations = 0 if improved else state.bad_validations + 1
        if tcfg.scheduler == "plateau":
            state.plateau = update_plateau(state.plateau, score, tcfg)
        run.reporter.validation(result, state.best_bleu)
        if improved:
            save_checkpoint(_checkpoint(run, train_state=None), run.run_dir / "best.pt")
        if tcfg.keep_best and math.isfinite(result.loss):
            keep_best(run.run_dir, _checkpoint(run, train_state=None), state.step, tcfg.stop_metric,
                      getattr(result, tcfg.stop_metric), score, tcfg.keep_best)
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
    run.state.train_seconds = run.reporter.training_seconds()
    path = run.run_dir / "last.pt"
    if run.ctx.is_main:
        save_checkpoint(_checkpoint(run, training_state(run.state, run.optimizer, run.scaler, rng_states,
                                                        run.ctx.device)), path)
        if run.cfg.train.keep_last:
            keep_latest(run.run_dir, _checkpoint(run, train_state=None), run.state.step, run.cfg.train.keep_last)
    return path


def _prepare_data(cfg: Config, checkpoint: dict[str, Any] | None, ctx: DistContext,
                  tokenizer: Tokenizer | None = None) -> PreparedData:
    """prepare(cfg) (with ``tokenizer`` if given); process 0 goes first so that the others load its cached
    tokenizer instead of racing."""
    if not ctx.is_main:
        dist_utils.barrier(ctx)
    data = prepare(cfg, verbose=ctx.is_main, tokenizer=tokenizer)
    if ctx.is_main:
        dist_utils.barrier(ctx)
    if len(data.train) == 0:
        raise DataError("the training split is empty after filtering; check data.train and data.max_length")
    if checkpoint is not None and Tokenizer.from_state(checkpoint["tokenizer"]).fingerprint() != \
            data.tokenizer.fingerprint():
        raise CheckpointError("the data now yield another tokenizer than the one in last.pt (did the training "
                              "text change?); resuming would not continue the same run")
    return data
