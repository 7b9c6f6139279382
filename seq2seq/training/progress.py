"""Progress of a training run: the progress bar, RUN_DIR/train.log, TensorBoard scalars and per-step losses."""

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
from . import distributed as dist_utils
from .distributed import DistContext
from .run import TrainState
from .validation import Validation

logger = logging.getLogger("seq2seq.training")


class Reporter:
    """Progress bar, RUN_DIR/train.log, TensorBoard scalars, and the per-step losses.

    Steps hand in their statistics as device tensors; :meth:`flush` reads them all at once
    (the loop's only host synchronisation), sums them over processes, logs one line, and
    stops the run after ``max_nonfinite`` skipped updates in a row.
    """

    def __init__(self, run_dir: Path, tcfg: TrainConfig, ctx: DistContext, steps_per_epoch: int,
                 start_step: int) -> None:
        self.run_dir, self.tcfg, self.ctx = run_dir, tcfg, ctx
        self.steps_per_epoch = steps_per_epoch
        self.start_step = start_step
        self.losses: dict[int, float] = {}
        self.validations: list[Validation] = []
        self._pending: list[tuple[int, Tensor, int, float]] = []  # step, stats (3,), target tokens, lr
        self._nonfinite_steps: list[int] = []  # the current run of skipped updates
        self._window_start = time.perf_counter()
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
        total = self.tcfg.max_steps or self.steps_per_epoch * self.tcfg.max_epochs
        show_bar = self.ctx.is_main and sys.stderr.isatty()
        self._bar = self._stack.enter_context(tqdm(total=total, initial=self.start_step, unit="step",
                                                   file=sys.stderr, disable=not show_bar, dynamic_ncols=True))
        if show_bar:
            self._stack.enter_context(logging_redirect_tqdm())  # log lines above the bar, not through it
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._writer is not None:
            self._writer.close()
        with contextlib.suppress(OSError):  # every line was flushed; only a line that already failed is left
            self._stack.close()

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
        """Keep one step's (3,) device statistics (loss sum, NLL sum, skipped) until the next flush."""
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
        rows = [values[3 * i:3 * i + 3] for i in range(len(self._pending))]
        if rows:
            self._log_window(state, rows)
        self._pending = []
        return "interrupted" if values[-1] > 0 else None

    def _log_window(self, state: TrainState, rows: list[list[float]]) -> None:
        elapsed = max(time.perf_counter() - self._window_start, 1e-9)
        loss_sum = nll_sum = good_tokens = all_tokens = 0.0
        skipped = []
        for (step, _, num_tokens, _), (step_loss, step_nll, step_skipped) in zip(self._pending, rows):
            self.losses[step] = step_loss / num_tokens
            all_tokens += num_tokens
            if step_skipped > 0:
                skipped.append(step)
                self._nonfinite_steps.append(step)
                continue
            self._nonfinite_steps = []
            loss_sum, nll_sum, good_tokens = loss_sum + step_loss, nll_sum + step_nll, good_tokens + num_tokens
        if skipped:
            self.warning(f"non-finite loss or gradient at step(s) {', '.join(map(str, skipped))}: update skipped")
        self._check_nonfinite()
        loss = loss_sum / good_tokens if good_tokens else math.nan
        ppl = math.exp(min(nll_sum / good_tokens, 100.0)) if good_tokens else math.nan
        lr, tokens_per_s = self._pending[-1][3], all_tokens / elapsed
        self.info(f"step {state.step} | epoch {state.epoch + 1} | loss {loss:.4f} | ppl {ppl:.2f} | lr {lr:.3g} "
                  f"| {tokens_per_s:,.0f} tgt tok/s")
        eta = elapsed / len(rows) * self._steps_to_validation(state)
        self._bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_per_s:,.0f}", lr=f"{lr:.2g}",
                              next_val=f"{int(eta // 60)}m{int(eta % 60):02d}s", refresh=False)
        if self._writer is not None:
            for name, value in (("loss", loss), ("ppl", ppl), ("lr", lr), ("target_tokens_per_s", tokens_per_s)):
                self._writer.add_scalar(f"train/{name}", value, state.step)
        self._window_start = time.perf_counter()

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
        self.info(f"validation at step {result.step} | dev loss {result.loss:.4f} | ppl {result.ppl:.2f} | "
                  f"BLEU {result.bleu:.2f} | chrF {result.chrf:.2f} | best BLEU {best_bleu:.2f}")
        if self._writer is not None:
            for name in ("loss", "ppl", "bleu", "chrf"):
                self._writer.add_scalar(f"dev/{name}", getattr(result, name), result.step)
        self._window_start += result.seconds


def _tensorboard_writer(run_dir: Path) -> Any:
    """A SummaryWriter into RUN_DIR/tensorboard when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))
