"""PyTorch's GRU cell (GRU_FACTS.md, 7) from its two products, the cell's gradients, and the matrix products
the fused loops (:mod:`.fused`, :mod:`.fused_encoder`, :mod:`.fused_feeding`) are written with.

Products run in the weight's dtype (bf16 under bf16 autocast, with fp32 accumulation) and return fp32:
the states and the gates stay fp32.
"""

from __future__ import annotations

import torch
from torch import Tensor


def product_dtype(device: torch.device) -> torch.dtype:
    """The dtype autocast would give a matrix product on ``device`` now (fp32 without autocast)."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return torch.float32


def gru_cell(gi: Tensor, gh: Tensor, h: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor, Tensor]]:
    """PyTorch's GRU cell from its two products: gi = W_ih x + b_ih, gh = W_hh h + b_hh, both (..., B, 3H) fp32.

    Returns h' (..., B, H) and the gates r, z, n and W_hn h + b_hn that the backward pass reads.
    """
    size = h.size(-1)
    rz = torch.sigmoid(gi[..., :2 * size] + gh[..., :2 * size])
    r, z = rz[..., :size], rz[..., size:]
    gh_n = gh[..., 2 * size:]
    n = torch.tanh(torch.addcmul(gi[..., 2 * size:], r, gh_n))
    return torch.addcmul(n, z, h - n), (r, z, n, gh_n)


def gru_cell_backward(dh_new: Tensor, h: Tensor, r: Tensor, z: Tensor, n: Tensor, gh_n: Tensor,
                      out: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients through one cell: dh' (..., B, H) -> d gi, d gh (..., B, 3H), and dh through z alone (..., B, H).
    ``out``: where to write d gi and d gh (e.g. rows of a buffer for every step)."""
    dn_pre = dh_new * (1 - z) * (1 - n * n)
    dz_pre = dh_new * (h - n) * z * (1 - z)
    dr_pre = dn_pre * gh_n * r * (1 - r)
    d_gi, d_gh = (None, None) if out is None else out
    return (torch.cat([dr_pre, dz_pre, dn_pre], -1, out=d_gi), torch.cat([dr_pre, dz_pre, dn_pre * r], -1, out=d_gh),
            dh_new * z)


def affine(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """bias (out,) or (N, out) fp32 + x (N, in) fp32 times weight.T in the weight's dtype -> (N, out) fp32."""
    if weight.dtype == torch.float32:
        return torch.addmm(bias, x, weight.t())
    return torch.mm(x.to(weight.dtype), weight.t()).float() + bias


def product(x: Tensor, weight: Tensor) -> Tensor:
    """x (N, O) fp32 times weight (O, I) in the weight's dtype -> (N, I) fp32: a gradient through x = ... W^T."""
    return torch.mm(x.to(weight.dtype), weight).float()


def add_product(acc: Tensor, x: Tensor, weight: Tensor) -> Tensor:
    """acc + x @ weight, fp32 (one fused product when the weight is fp32)."""
    return torch.addmm(acc, x, weight) if weight.dtype == torch.float32 else acc + product(x, weight)


def mm_t(grad: Tensor, x: Tensor, dtype: torch.dtype) -> Tensor:
    """A weight gradient over all T*B rows at once: grad (T, B, O), x (T, B, I) -> grad^T x (O, I) fp32."""
    return torch.mm(grad.reshape(-1, grad.size(-1)).t().to(dtype), x.reshape(-1, x.size(-1)).to(dtype)).float()
