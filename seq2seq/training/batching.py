"""Which batches each update takes: the epoch's batch order cut into update groups, where a resume continues,
the target tokens of a group, and the copy of a batch to the device.

Every process computes the same order from (seed, epoch), so nothing but the step count travels
between processes; each takes its share of a group with :func:`.distributed.rank_share`.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from ..config import TrainConfig
from ..data import Batch, EncodedCorpus
from ..errors import DataError
from .distributed import DistContext
from .run import TrainState


def to_device(batch: Batch, device: torch.device) -> Batch:
    """Pinned host memory lets the copy to the GPU run asynchronously with the computation."""
    if device.type != "cuda":
        return batch
    return batch.pin_memory().to(device, non_blocking=True)


def remaining_groups(corpus: EncodedCorpus, tcfg: TrainConfig, state: TrainState, ctx: DistContext
                      ) -> Iterator[list[np.ndarray]]:
    """The update groups of the current epoch not yet done (after a resume, from where it stopped)."""
    per_update = ctx.world_size * tcfg.accumulate
    groups = epoch_groups(corpus, tcfg, state.epoch, ctx)
    # A resume with another number of processes continues at the next whole update.
    yield from groups[-(-state.batches_done // per_update):]


def epoch_groups(corpus: EncodedCorpus, tcfg: TrainConfig, epoch: int, ctx: DistContext) -> list[list[np.ndarray]]:
    """The epoch's batch order cut into updates of ``world_size * accumulate`` batches."""
    order = corpus.batch_arrays(tcfg.batch_size, tcfg.batch_by, shuffle=True, seed=tcfg.seed, epoch=epoch)
    if len(order) < ctx.world_size:
        raise DataError(f"the training data make {len(order)} batch(es) of train.batch_size={tcfg.batch_size}, "
                        f"fewer than the {ctx.world_size} processes; use a smaller batch size or fewer processes")
    order = order[: len(order) - len(order) % ctx.world_size]  # every process gets as many batches
    per_update = ctx.world_size * tcfg.accumulate
    return [order[i:i + per_update] for i in range(0, len(order), per_update)]


def target_tokens(corpus: EncodedCorpus, group: list[np.ndarray]) -> int:
    """Real target tokens (EOS included) in all batches of an update, known to every process without talking."""
    return sum(int(corpus.tgt_lengths[indices].sum()) + len(indices) for indices in group)
