"""The k most probable next tokens of a decoding step, without the (N, V) log-probabilities.

Greedy and beam search only need, per hypothesis, the k best tokens and their
log-probabilities. On a CPU, log_softmax over the whole (N, V) matrix and top-k over it cost
more than the output layer's matrix product itself: the logits do not fit in cache, and
``topk`` reads a row element by element. Here the output layer runs on a block of rows at a time,
log_softmax and the choice run while that block is in cache, and the top-k first picks the k
column blocks with the largest maxima (a vectorised ``amax``), then the top k among them only.
The values are log_softmax's own, so the result equals masking the full log-probabilities
and taking their top k.

On the CPU the output layer's bias rides inside the product (:func:`search_projection`):
``addmm`` first copies the bias into every row of its (rows, V) result and then reads that
result back, so a projection [W^T; b] of rows [x, 1] does the same work in one pass.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

# Rows per block on the CPU: 128 x 8,000 fp32 logits are 4 MB. Against the whole-matrix path (output layer,
# log_softmax, mask, topk) at 1,535 rows x 8,000, one thread (scripts/benchmark.py's beam-5 shape), blocks of
# 32 / 64 / 128 / 256 / 512 / all rows took 0.64 / 0.48 / 0.41 / 0.43 / 0.71 / 0.89 x its time for k = 5 under
# bf16 autocast, and 0.82 / 0.69 / 0.68 / 0.74 / 0.76 / 0.90 x in fp32. On a GPU the whole matrix is one block.
CPU_BLOCK_ROWS = 128
# Columns per block of the top-k: at 128 x 8,000, blocks of 50 / 100 / 200 / 400 columns took 0.87 / 0.47 /
# 0.57 / 0.78 x the time of ``topk(5)``, and 100 columns 0.66 x the time of ``max`` for k = 1.
COLUMN_BLOCK = 100


class TopTokens(NamedTuple):
    """One decoding step reduced to its k best tokens: ``log_probs`` (N, k) float32, best first,
    ``ids`` (N, k) long, the next ``state`` and ``attention`` (N, S) or None."""

    log_probs: Tensor
    ids: Tensor
    state: Any
    attention: Tensor | None


def projection_dtype(output: nn.Linear, device: torch.device) -> torch.dtype:
    """The dtype the output layer's product runs in: autocast's when it is on, else the weight's own."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return output.weight.dtype


def search_projection(output: nn.Linear, dtype: torch.dtype) -> Tensor:
    """The output layer as one (E + 1, V) matrix in ``dtype``, [W^T; b] (W^T alone without a bias): rows
    [x, 1] times it are ``output(x)``. Made once per search, not per step (``Seq2Seq.decode_top`` keeps it)."""
    weight = output.weight.detach()
    if output.bias is not None:
        weight = torch.cat([weight, output.bias.detach()[:, None]], dim=1)
    return weight.t().to(dtype).contiguous()


def top_log_probs(features: Tensor, output: nn.Linear, k: int, banned: tuple[int, ...],
                  block_rows: int | None = None, projection: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """features (N, E) -> the k largest of log_softmax(output(features)) per row with the ``banned`` token ids
    left out of the choice (not of the normalisation): (log_probs (N, k) float32, ids (N, k) long).
    ``projection``: :func:`search_projection` of ``output`` in the product dtype, if the caller keeps one."""
    rows = features.size(0)
    k = min(k, output.out_features)
    on_cpu = features.device.type == "cpu"
    if block_rows is None:
        block_rows = CPU_BLOCK_ROWS if on_cpu else max(rows, 1)
    if on_cpu and projection is None:
        projection = search_projection(output, projection_dtype(output, features.device))
    log_probs = torch.empty(rows, k, device=features.device)
    ids = torch.empty(rows, k, dtype=torch.long, device=features.device)
    banned_ids = list(banned)
    for start in range(0, rows, block_rows):
        x = features[start:start + block_rows]
        logits = output(x) if not on_cpu else torch.mm(_with_ones(x, projection), projection)
        block = torch.log_softmax(logits.float(), dim=1)
        block[:, banned_ids] = float("-inf")
        log_probs[start:start + block_rows], ids[start:start + block_rows] = top_k_by_blocks(block, k)
    return log_probs, ids


def _with_ones(x: Tensor, projection: Tensor) -> Tensor:
    """x (N, E) in the projection's dtype, with a column of ones when the projection has a bias row."""
    x = x.to(projection.dtype)
    if projection.size(0) == x.size(1):
        return x
    return torch.cat([x, x.new_ones(x.size(0), 1)], dim=1)


def top_k_by_blocks(values: Tensor, k: int, width: int = COLUMN_BLOCK) -> tuple[Tensor, Tensor]:
    """``values.topk(k, dim=1)`` of a (N, V) tensor (``max`` for k = 1: the first index on ties), by column blocks.

    A value among a row's k largest lies in one of the k blocks with the largest maxima (a block
    whose maximum is smaller has k values above all of its own), so only those k blocks and the
    last V mod ``width`` columns are searched.
    """
    rows, columns = values.shape
    blocks = columns // width
    if blocks <= k:
        return values.max(dim=1, keepdim=True) if k == 1 else values.topk(k, dim=1)
    tiled = values.as_strided((rows, blocks, width), (values.stride(0), width * values.stride(1), values.stride(1)))
    block_max = tiled.amax(dim=2)
    chosen = block_max.max(dim=1, keepdim=True).indices if k == 1 else block_max.topk(k, dim=1).indices
    offsets = torch.arange(width, device=values.device)
    candidates = tiled.gather(1, chosen[:, :, None].expand(-1, -1, width)).view(rows, k * width)
    candidate_ids = (chosen[:, :, None] * width + offsets).view(rows, k * width)
    if blocks * width < columns:  # the columns after the last whole block, in index order
        candidates = torch.cat([candidates, values[:, blocks * width:]], dim=1)
        tail = torch.arange(blocks * width, columns, device=values.device).expand(rows, -1)
        candidate_ids = torch.cat([candidate_ids, tail], dim=1)
    best, position = candidates.max(dim=1, keepdim=True) if k == 1 else candidates.topk(k, dim=1)
    return best, candidate_ids.gather(1, position)
