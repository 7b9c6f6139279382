"""Weights arranged for search (cast, concatenated, transposed), kept until they may have changed."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor


class ArrangedWeights:
    """A cache of ``arrange()`` results by name, for a module whose search reads its parameters rearranged.

    An entry is rebuilt when the dtype or a parameter's storage changes; :meth:`forget_arranged_weights`
    drops all of them at the start of each search, since parameter versions cannot tell (fused
    optimizers update weights in place without bumping them).
    """

    def arranged(self, name: str, dtype: torch.dtype, params: Sequence[Tensor], arrange: Callable[[], Any]) -> Any:
        """``arrange()`` kept under ``name`` until the dtype or a parameter's storage changes, or the next search."""
        key = (dtype, *(p.data_ptr() for p in params))
        cache = self.__dict__.setdefault("_arranged_cache", {})  # name -> (key, arranged)
        if name not in cache or cache[name][0] != key:
            cache[name] = (key, arrange())
        return cache[name][1]

    def forget_arranged_weights(self) -> None:
        """Drop the weights arranged for search: the next step arranges them from the parameters as they are."""
        self.__dict__.pop("_arranged_cache", None)
