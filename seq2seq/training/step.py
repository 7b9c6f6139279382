"""One optimizer update: gradients of a group of batches, clipping, a guarded Adam step."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
from torch import Tensor, nn

from ..config import TrainConfig
from ..device import AmpSettings
from .distributed import DistContext


def build_optimizer(model: nn.Module, tcfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam or AdamW, fused: one kernel per step, and it can skip a non-finite update on the device."""
    kind = torch.optim.AdamW if tcfg.optimizer == "adamw" else torch.optim.Adam
    return kind(model.parameters(), lr=tcfg.lr, betas=(tcfg.betas[0], tcfg.betas[1]),
                weight_decay=tcfg.weight_decay, fused=True)


def train_step(wrapped: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               batches: list[Any], num_tokens: int, lr: float, tcfg: TrainConfig, amp: AmpSettings,
               ctx: DistContext) -> Tensor:
    """One update from this process's batches -> (4,) on the device: loss sum, NLL sum, 1 if the update was
    skipped, and the gradient norm before clipping."""
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
                batch_sums = wrapped(batch.src_ids, batch.src_lengths, batch.tgt_in_ids, batch.tgt_out_ids,
                                     batch.num_tgt_tokens)
            scaler.scale(batch_sums[0] * loss_scale).backward()
        sums.append(batch_sums.detach())
    total = torch.stack(sums).sum(dim=0)
    grad_norm = _unscale_and_clip(optimizer, scaler, tcfg.clip_norm)
    skipped = _apply_update(optimizer, scaler, total[0], grad_norm, amp)
    return torch.cat([total, skipped.float().reshape(1), grad_norm.float().reshape(1)])


def _unscale_and_clip(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, clip_norm: float) -> Tensor:
    """The 0-dim norm of all gradients before clipping (on the device); clips them to ``clip_norm`` if > 0."""
    scaler.unscale_(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return nn.utils.clip_grad_norm_(params, clip_norm if clip_norm > 0 else math.inf)


def _apply_update(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loss_sum: Tensor,
                  grad_norm: Tensor, amp: AmpSettings) -> Tensor:
    """Step the optimizer unless the loss or gradients are not finite; returns the 0-dim 'skipped' flag."""
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
