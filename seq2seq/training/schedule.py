"""The learning-rate schedule: a pure function of the step, plus the small reduce-on-plateau state.

Warmup rises linearly to ``train.lr`` over ``warmup_steps`` updates; after it the rate is
constant, decays as the inverse square root of the step (Vaswani et al. 2017), or is
multiplied by ``plateau_factor`` whenever dev BLEU has not improved for ``plateau_patience``
validations. Decayed rates never fall below ``min_lr``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..config import TrainConfig


@dataclass
class PlateauState:
    """Reduce-on-plateau bookkeeping; it lives in the checkpoint so that resuming keeps the same rate."""

    scale: float = 1.0  # product of the plateau_factor reductions so far
    best_bleu: float = -math.inf  # the best train.stop_metric score (higher is better; named before there were others)
    bad_validations: int = 0

    def to_state(self) -> dict[str, float | int]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, float | int]) -> PlateauState:
        return cls(scale=float(state["scale"]), best_bleu=float(state["best_bleu"]),
                   bad_validations=int(state["bad_validations"]))


def lr_at(step: int, cfg: TrainConfig, plateau_scale: float = 1.0) -> float:
    """The learning rate of update number ``step`` (1-based)."""
    step = max(step, 1)
    if step <= cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    if cfg.scheduler == "constant":
        return cfg.lr
    if cfg.scheduler == "inverse_sqrt":
        # Continuous with the warmup at step == warmup_steps; without warmup it decays from step 1.
        return max(cfg.min_lr, cfg.lr * math.sqrt(max(cfg.warmup_steps, 1) / step))
    return max(cfg.min_lr, cfg.lr * plateau_scale)


def update_plateau(state: PlateauState, dev_bleu: float, cfg: TrainConfig) -> PlateauState:
    """The plateau state after a validation scoring ``dev_bleu`` (or any stop metric, higher = better);
    the rate shrinks after too many without gain."""
    if dev_bleu > state.best_bleu:
        return PlateauState(scale=state.scale, best_bleu=dev_bleu, bad_validations=0)
    bad = state.bad_validations + 1
    if bad >= cfg.plateau_patience:
        return PlateauState(scale=state.scale * cfg.plateau_factor, best_bleu=state.best_bleu, bad_validations=0)
    return PlateauState(scale=state.scale, best_bleu=state.best_bleu, bad_validations=bad)
