"""Progress of a training run: the progress bar, RUN_DIR/train.log, TensorBoard and per-step losses.

Each log line names what it shows: ``loss (smoothed)`` is the label-smoothed loss that is
optimised, ``nll`` the negative log-likelihood of the reference per target token, and
``ppl = exp(nll)``; the dev figures are NLL and perplexity too, so they compare with the
training ``nll``. Epochs count from 1 and a line at the end of an epoch names that epoch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import TrainConfig
from ..errors import Seq2SeqError
from ..writing import storage_error
from ..logs import format_duration
from . import distributed as dist_utils
from .distributed import DistContext
from .run import TrainState
from .validation import Validation

logger = logging.getLogger("seq2seq.training")

NUM_STATS = 4  # per step, from train_step: loss sum, NLL sum, skipped flag, gradient norm


class Reporter:
    """Progress bar, RUN_DIR/train.log, TensorBoard scalars, and the per-step losses.

    Steps hand in their statistics as device tensors; :meth:`flush` reads them all at once
    (the loop's only host synchronisation), sums them over processes, logs one line, and
    stops the run after ``max_nonfinite`` skipped updates in a row.
    """

    def __init__(self, run_dir: Path, tcfg: TrainConfig, ctx: DistContext, steps_per_epoch: int,
                 start_step: int, config_yaml: str = "", start_seconds: float = 0.0) -> None:
        self.run_dir, self.tcfg, self.ctx = run_dir, tcfg, ctx
        self.config_yaml = config_yaml
        self.steps_per_epoch = steps_per_epoch
        self.start_step = start_step
        self.losses: dict[int, float] = {}
        self.validations: list[Validation] = []
        self._pending: list[tuple[int, Tensor, int, float]] = []  # step, stats (NUM_STATS,), target tokens, lr
        self._nonfinite_steps: list[int] = []  # the current run of skipped updates
        self._window_start = time.perf_counter()
        self._session_start, self._earlier_seconds = self._window_start, start_seconds
        self._stack = contextlib.ExitStack()
        self._file: Any = None
        self._writer: Any = None
        self._bar: Any = None

    def __enter__(self) -> Reporter:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        if self.ctx.is_main:
            try:
                self._file = self._stack.enter_context(open(self.run_dir / "train.log", "a", encoding="utf-8"))
            except OSError as exc:
                raise storage_error(self.run_dir / "train.log", exc, "nothing was trained yet") from exc
            self._writer = _tensorboard_writer(self.run_dir)
            if self._writer is not None and self.config_yaml:
                self._writer.add_text("config", f"```yaml\n{self.config_yaml}```", self.start_step)
        show_bar = self.ctx.is_main and sys.stderr.isatty()
        self._bar = self._stack.enter_context(tqdm(total=self.total_steps, initial=self.start_step, unit="step",
                                                   file=sys.stderr, disable=not show_bar, dynamic_ncols=True))
        if show_bar:
            self._stack.enter_context(logging_redirect_tqdm())  # log lines above the bar, not through it
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._writer is not None:
            self._writer.close()
        with contextlib.suppress(OSError):  # every line was flushed; only a line that already failed is left
            self._stack.close()

    @property
    def total_steps(self) -> int:
        """The step the run ends at unless it stops early: train.max_steps, else all epochs."""
        by_epochs = self.steps_per_epoch * self.tcfg.max_epochs
        return min(self.tcfg.max_steps, by_epochs) if self.tcfg.max_steps else by_epochs

    def training_seconds(self) -> float:
        """Wall seconds the run has trained: the earlier sessions' (from last.pt) and this one's so far."""
        return self._earlier_seconds + time.perf_counter() - self._session_start

    def info(self, message: str) -> None:
        self._write(logging.INFO, message)

    def warning(self, message: str) -> None:
        self._write(logging.WARNING, message)

    def _write(self, level: int, message: str) -> None:
        if not self.ctx.is_main:
            return
        logger.log(level, message)
        if self._file is not None:
            prefix = "WARNING " if level >= logging.WARNING else ""
            try:
                self._file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {prefix}{message}\n")
                self._file.flush()
            except OSError as exc:
                raise storage_error(self.run_dir / "train.log", exc, "the log up to this line is kept") from exc

    def record(self, step: int, stats: Tensor, num_tokens: int, lr: float) -> None:
        """Keep one step's (NUM_STATS,) device statistics (loss sum, NLL sum, skipped, grad norm) until the flush."""
        self._pending.append((step, stats, num_tokens, lr))
        self._bar.update(1)

    def flush(self, state: TrainState, stop_requested: bool) -> str | None:
        """Read the pending steps, log them; returns "interrupted" when any process was asked to stop."""
        if not self._pending and not self.ctx.is_distributed:
            return "interrupted" if stop_requested else None
        device = self.ctx.device
        stats = [s for _, s, _, _ in self._pending] or [torch.zeros(0, device=device)]
        flat = torch.cat([torch.cat([s.reshape(-1) for s in stats]), torch.tensor([float(stop_requested)],
                                                                                  device=device)])
        values = dist_utils.sum_across_ranks(flat, self.ctx).tolist()
        rows = [values[NUM_STATS * i:NUM_STATS * (i + 1)] for i in range(len(self._pending))]
        if rows:
            self._log_window(state, rows)
        self._pending = []
        return "interrupted" if values[-1] > 0 else None

    def _log_window(self, state: TrainState, rows: list[list[float]]) -> None:
        elapsed = max(time.perf_counter() - self._window_start, 1e-9)
        loss_sum = nll_sum = good_tokens = all_tokens = norm_sum = 0.0
        skipped = []
        for (step, _, num_tokens, _), (step_loss, step_nll, step_skipped, norm) in zip(self._pending, rows):
            self.losses[step] = step_loss / num_tokens
            all_tokens += num_tokens
            if step_skipped > 0:
                skipped.append(step)
                self._nonfinite_steps.append(step)
                continue
            self._nonfinite_steps = []
            loss_sum, nll_sum, good_tokens = loss_sum + step_loss, nll_sum + step_nll, good_tokens + num_tokens
            norm_sum += norm / self.ctx.world_size  # every process holds the same all-reduced gradients
        if skipped:
            self.warning(f"non-finite loss or gradient at step(s) {', '.join(map(str, skipped))}: update skipped")
        self._check_nonfinite()
        good_steps = len(rows) - len(skipped)
        figures = {"loss_smoothed": loss_sum / good_tokens if good_tokens else math.nan,
                   "nll": nll_sum / good_tokens if good_tokens else math.nan,
                   "grad_norm": norm_sum / good_steps if good_steps else math.nan,
                   "lr": self._pending[-1][3], "target_tokens_per_s": all_tokens / elapsed}
        figures["ppl"] = math.exp(min(figures["nll"], 100.0))
        self.info(self._step_line(state, figures, len(rows) / elapsed))
        eta = elapsed / len(rows) * self._steps_to_validation(state)
        self._bar.set_postfix(loss=f"{figures['loss_smoothed']:.3f}", tok_s=f"{figures['target_tokens_per_s']:,.0f}",
                              lr=f"{figures['lr']:.2g}", next_val=format_duration(eta), refresh=False)
        if self._writer is not None:
            for name, value in figures.items():
                self._writer.add_scalar(f"train/{name}", value, state.step)
        self._window_start = time.perf_counter()

    def _step_line(self, state: TrainState, figures: dict[str, float], steps_per_s: float) -> str:
        # The time left assumes the run goes to total_steps at this window's rate (validations not counted).
        left = format_duration(max(self.total_steps - state.step, 0) / max(steps_per_s, 1e-9))
        return (f"step {state.step} of {self.total_steps} | epoch {epoch_label(state, self.tcfg)} | loss (smoothed) "
                f"{figures['loss_smoothed']:.4f} | nll {figures['nll']:.4f} | ppl = exp(nll) {figures['ppl']:.2f} "
                f"| grad norm {figures['grad_norm']:.2f} | lr {figures['lr']:.3g} | "
                f"{figures['target_tokens_per_s']:,.0f} tgt tok/s | {steps_per_s:.2f} steps/s, {left} left")

    def _check_nonfinite(self) -> None:
        limit = max(self.tcfg.max_nonfinite, 1)
        if len(self._nonfinite_steps) < limit:
            return
        last = self.run_dir / "last.pt"
        kept = f"the last good checkpoint, {last}, is untouched" if last.is_file() else "no checkpoint was written"
        raise Seq2SeqError(
            f"{len(self._nonfinite_steps)} updates in a row had a non-finite loss or gradient (steps "
            f"{self._nonfinite_steps[0]}-{self._nonfinite_steps[-1]}, train.max_nonfinite={self.tcfg.max_nonfinite}); "
            f"stopping: {kept}. Try a lower train.lr, some train.warmup_steps, train.clip_norm > 0 or train.amp=off")

    def _steps_to_validation(self, state: TrainState) -> int:
        if self.tcfg.validate_every:
            return self.tcfg.validate_every - state.step % self.tcfg.validate_every
        per_update = self.ctx.world_size * self.tcfg.accumulate
        return max(self.steps_per_epoch - state.batches_done // per_update, 0)

    def validation(self, result: Validation, best_bleu: float) -> None:
        """Log one validation; the time it took does not count in the training throughput."""
        self.validations.append(result)
        if not math.isfinite(result.loss):
            self.warning(f"validation at step {result.step}: the dev loss is {result.loss} (not finite): the model "
                         f"has diverged or its activations overflow (try train.amp=off or a lower train.lr); this "
                         f"validation counts as no improvement, so best.pt is not replaced")
        self.info(f"validation at step {result.step} | dev nll {result.loss:.4f} | ppl = exp(nll) {result.ppl:.2f} | "
                  f"BLEU {result.bleu:.2f} | chrF {result.chrf:.2f} | best BLEU {best_bleu:.2f}")
        if self._writer is not None:
            for name, value in (("nll", result.loss), ("ppl", result.ppl), ("bleu", result.bleu),
                                ("chrf", result.chrf)):
                self._writer.add_scalar(f"dev/{name}", value, result.step)
            if result.samples:
                self._writer.add_text("dev/translations", _samples_markdown(result.samples), result.step)
        self._window_start += result.seconds


def epoch_label(state: TrainState, tcfg: TrainConfig) -> str:
    """``'3 of 4'``: the epoch the last step belongs to (the one just finished at an epoch's end), of max_epochs."""
    current = state.epoch + 1 if state.batches_done > 0 or state.epoch == 0 else state.epoch
    return f"{current} of {tcfg.max_epochs}"


def _samples_markdown(samples: list[tuple[str, str, str]]) -> str:
    """Dev translations as a Markdown table (TensorBoard renders text summaries as Markdown)."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    rows = [f"| {cell(src)} | {cell(ref)} | {cell(hyp)} |" for src, ref, hyp in samples]
    return "\n".join(["| source | reference | greedy translation |", "| --- | --- | --- |", *rows])


def _tensorboard_writer(run_dir: Path) -> Any:
    """A SummaryWriter into RUN_DIR/tensorboard when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))
