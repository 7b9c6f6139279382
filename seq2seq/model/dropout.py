"""Dropout with masks drawn from torch's generator, cheaper on the CPU than ``bernoulli_``.

On the CPU ``bernoulli_`` (what ``nn.Dropout`` draws with) makes one generator call per element:
about 8 ms for a (1820, 512) mask on one core. Here each 64-bit draw of ``torch.randint`` gives
four 16-bit numbers, which are compared with a threshold: the drop probability is rounded to a
multiple of 1/65,536 (0.3 -> 0.300003) and the kept entries are scaled by the exact inverse of
the kept share, so the expectation of the output stays the input. The draws come from torch's
generator, so seeding and exact resume work as with ``nn.Dropout``. CUDA keeps ``bernoulli_``,
which is fast there. The embeddings, the decoder's layers and its output use these masks; the
encoder's between-layer dropout keeps ``F.dropout``, as nn.GRU draws it (``encoder.run_gru``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

_LEVELS = 1 << 16  # 16-bit random numbers


def scaled_keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device,
                     dtype: torch.dtype = torch.float32) -> Tensor:
    """A dropout mask of ``shape``: 0 with probability ``p``, else 1 / (1 - p), in ``dtype``."""
    if device.type != "cpu":
        keep = 1.0 - p
        return torch.empty(shape, device=device, dtype=dtype).bernoulli_(keep).div_(keep)
    dropped_levels = min(round(p * _LEVELS), _LEVELS - 1)  # p just below 1 still keeps a sliver
    numel = math.prod(shape)
    # Full-range 64-bit draws: every bit uniform, so each of the four int16 views of a draw is too.
    draws = torch.randint(-2**63, 2**63 - 1, ((numel + 3) // 4,), dtype=torch.int64, device=device)
    bits = draws.view(torch.int16)[:numel].view(shape)
    keep = bits >= -_LEVELS // 2 + dropped_levels
    return keep.to(dtype).mul_(_LEVELS / (_LEVELS - dropped_levels))


class Dropout(nn.Module):
    """``nn.Dropout(p)`` with :func:`scaled_keep_mask`'s masks (no parameters: checkpoints are unchanged)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * scaled_keep_mask(x.shape, self.p, x.device, x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class EmbeddingDropout(Dropout):
    """Dropout of embedded tokens (..., E): of each element with ``p``, as :class:`Dropout`, and of whole
    tokens with ``word_p`` (word dropout, Sennrich et al. 2016; Gal and Ghahramani 2016): a dropped
    token's embedding is all zeros, as if the word were missing, and the kept ones are scaled by
    1 / (1 - word_p)."""

    def __init__(self, p: float, word_p: float = 0.0) -> None:
        super().__init__(p)
        if not 0.0 <= word_p < 1.0:
            raise ValueError(f"word dropout probability must be in [0, 1), got {word_p}")
        self.word_p = word_p

    def forward(self, x: Tensor) -> Tensor:
        x = super().forward(x)
        if not self.training or self.word_p == 0.0:
            return x
        return x * scaled_keep_mask((*x.shape[:-1], 1), self.word_p, x.device, x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}, word_p={self.word_p}"
