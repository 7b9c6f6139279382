"""Dropout masks from packed 16-bit draws (``seq2seq.model.dropout``)."""

from __future__ import annotations

import pytest
import torch

from seq2seq.model.dropout import Dropout, EmbeddingDropout, scaled_keep_mask

CPU = torch.device("cpu")


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_the_mask_drops_p_of_the_units_and_keeps_the_expectation(p: float) -> None:
    torch.manual_seed(0)
    mask = scaled_keep_mask((1000, 1001), p, CPU)  # an odd count: the last 64-bit draw is used in part
    kept = mask > 0
    values = mask.unique().tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / (1 - p), rel=1e-4)
    assert kept.float().mean().item() == pytest.approx(1 - p, abs=0.003)  # about 6 standard deviations
    assert mask.mean().item() == pytest.approx(1.0, abs=0.005)


def test_a_probability_just_below_one_keeps_a_sliver_at_a_finite_scale() -> None:
    torch.manual_seed(0)
    mask = scaled_keep_mask((1_000_000,), 0.999999, CPU)  # about 15 kept
    assert set(mask.unique().tolist()) == {0.0, 65536.0}


def test_every_16_bit_lane_of_a_draw_is_uniform() -> None:
    # Four mask entries come from one 64-bit draw; a lane with a biased bit would drop more or less often.
    torch.manual_seed(1)
    kept = scaled_keep_mask((250000, 4), 0.5, CPU) > 0
    for lane in range(4):
        assert kept[:, lane].float().mean().item() == pytest.approx(0.5, abs=0.005), lane


def test_masks_come_from_torchs_generator() -> None:
    torch.manual_seed(7)
    first = scaled_keep_mask((64, 33), 0.3, CPU)
    torch.manual_seed(7)
    again = scaled_keep_mask((64, 33), 0.3, CPU)
    other = scaled_keep_mask((64, 33), 0.3, CPU)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_the_module_drops_in_training_only_and_keeps_the_dtype() -> None:
    x = torch.randn(8, 100, dtype=torch.bfloat16, requires_grad=True)
    dropout = Dropout(0.4)
    torch.manual_seed(3)
    y = dropout(x)
    assert y.dtype == torch.bfloat16
    dropped = y == 0
    assert 0 < dropped.float().mean().item() < 1
    y.sum().backward()
    assert torch.equal(x.grad == 0, dropped)  # the gradient passes the kept units only
    assert dropout.eval()(x) is x
    assert Dropout(0.0).train()(x) is x
    assert "p=0.4" in repr(dropout)
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.0)


def test_word_dropout_zeroes_whole_tokens_and_scales_the_rest_in_training_only() -> None:
    torch.manual_seed(0)
    layer = EmbeddingDropout(0.0, word_p=0.25).train()
    x = torch.ones(40, 50, 8)
    out = layer(x)
    assert torch.equal(out.amin(-1), out.amax(-1))  # every token's vector is constant: all 0 or all 1/(1-p)
    values = out.unique().tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / 0.75, rel=1e-4)
    assert (out[..., 0] == 0).float().mean().item() == pytest.approx(0.25, abs=0.03)
    assert torch.equal(layer.eval()(x), x)


def test_word_dropout_comes_on_top_of_element_dropout() -> None:
    torch.manual_seed(1)
    out = EmbeddingDropout(0.5, word_p=0.5).train()(torch.ones(200, 100, 16))
    dropped_tokens = (out == 0).all(-1).float().mean().item()
    assert dropped_tokens == pytest.approx(0.5, abs=0.02)  # whole tokens (element dropout alone: 0.5**16)
    kept = out[(out != 0).any(-1)]
    assert (kept == 0).float().mean().item() == pytest.approx(0.5, abs=0.02)  # elements within kept tokens
    assert kept.unique().tolist() == [0.0, pytest.approx(4.0, rel=1e-3)]  # 1/(1-p) twice


def test_word_dropout_probability_is_checked() -> None:
    with pytest.raises(ValueError, match="word dropout"):
        EmbeddingDropout(0.1, word_p=1.0)
