"""The facts of GRU_FACTS.md, checked on a trained model and the user's sentence, each with its max |difference|."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..ids import PAD_ID
from ..model import Seq2Seq

TOLERANCE = 1e-5  # "equal" in a check means a maximum absolute difference at most this (float32 rounding)


@dataclass(frozen=True)
class Check:
    """A fact of GRU_FACTS.md tested on this model: ``expect_equal`` says whether the two sides should agree."""

    name: str
    claim: str
    expect_equal: bool
    max_abs_diff: float

    @property
    def holds(self) -> bool:
        return (self.max_abs_diff <= TOLERANCE) == self.expect_equal


def encoder_checks(output: Tensor, h_n: Tensor, num_layers: int, directions: int) -> list[Check]:
    """Where the top layer's final states sit in ``output`` (1, S, D*H), for the sentence alone."""
    hidden = h_n.size(-1)
    top = h_n.view(num_layers, directions, 1, hidden)[-1]  # (D, 1, H)
    last = output.size(1) - 1
    checks = [check("forward_final_is_output_last", "top forward final state == output[0, S-1, :H]", True,
                     max_abs_diff(top[0], output[:, last, :hidden]))]
    if directions == 1:
        checks.append(check("h_n_last_is_output_last", "h_n[-1] == output[0, -1] (unidirectional, unpadded)", True,
                             max_abs_diff(h_n[-1], output[:, -1])))
        return checks
    checks.append(check("backward_final_is_output_first", "top backward final state == output[0, 0, H:]", True,
                         max_abs_diff(top[1], output[:, 0, hidden:])))
    if last > 0:  # with one token the first position is also the last
        checks.append(check("backward_final_is_not_output_last",
                             "top backward final state != output[0, S-1, H:] (it ends at the first token)", False,
                             max_abs_diff(top[1], output[:, last, hidden:])))
    return checks


def padding_checks(model: Seq2Seq, src_ids: list[int], h_n_alone: Tensor, device: torch.device) -> list[Check]:
    """Encode the sentence padded inside a batch beside one twice as long: what ``output[:, -1]`` then holds."""
    length = len(src_ids)
    batch = torch.full((2, 2 * length), PAD_ID, dtype=torch.long, device=device)
    batch[0, :length] = torch.tensor(src_ids, device=device)
    batch[1] = torch.tensor(src_ids + src_ids, device=device)
    enc = model.encode(batch, torch.tensor([length, 2 * length]))
    directions = 2 if model.bidirectional else 1
    hidden = enc.h_n.size(-1)
    forward_final = enc.h_n.view(model.num_layers, directions, 2, hidden)[-1, 0, 0]  # (H,)
    return [
        check("padded_output_last_is_not_h_n",
               f"padded to {2 * length}: output[0, -1, :H] != top forward final state (padding holds zeros)", False,
               max_abs_diff(enc.output[0, -1, :hidden], forward_final)),
        check("padded_output_true_last_is_h_n", "padded: output[0, S-1, :H] at the true last token == that state",
               True, max_abs_diff(enc.output[0, length - 1, :hidden], forward_final)),
        check("padded_h_n_equals_alone", "padded: h_n of the sentence in the batch == h_n of it alone (all layers)",
               True, max_abs_diff(enc.h_n[:, 0], h_n_alone[:, 0])),
    ]


def join_checks(joined: Tensor, h_n: Tensor, num_layers: int, directions: int) -> list[Check]:
    """The decoder starts from h_n joined per layer: cat(view[:, 0], view[:, 1]) (L, B, D*H)."""
    per_layer = h_n.view(num_layers, directions, h_n.size(1), h_n.size(-1))
    expected = torch.cat([per_layer[:, d] for d in range(directions)], dim=-1)
    claim = ("joined == cat(h_n.view(L, 2, B, H)[:, 0], [:, 1], dim=-1)" if directions == 2
             else "joined == h_n.view(L, 1, B, H)[:, 0]")
    return [check("joined_is_h_n_per_layer", claim, True, max_abs_diff(joined, expected))]


def check(name: str, claim: str, expect_equal: bool, difference: float) -> Check:
    return Check(name=name, claim=claim, expect_equal=expect_equal, max_abs_diff=difference)


def max_abs_diff(a: Tensor, b: Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()
