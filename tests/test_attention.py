"""Masked attention: weights sum to 1 over real positions, are exactly 0 on padding, and match the equations."""

from __future__ import annotations

import pytest
import torch

from seq2seq.model.attention import (BahdanauAttention, LuongAttention, build_attention, masked_softmax,
                                     weighted_context)

B, T, S, Q, C = 3, 4, 6, 5, 5
SRC_LENGTHS = torch.tensor([6, 3, 1])
KINDS = ["bahdanau", "luong_dot", "luong_general"]


def src_mask() -> torch.Tensor:
    return torch.arange(S)[None, :] < SRC_LENGTHS[:, None]


def inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, Q, generator=generator), torch.randn(B, S, C, generator=generator)


def build(kind: str) -> BahdanauAttention | LuongAttention:
    torch.manual_seed(3)
    return build_attention(kind, query_size=Q, key_size=C)


def test_masked_softmax_is_the_softmax_over_real_positions_only() -> None:
    scores = torch.randn(B, T, S, generator=torch.Generator().manual_seed(1))
    weights = masked_softmax(scores, src_mask())
    for b, length in enumerate(SRC_LENGTHS.tolist()):
        torch.testing.assert_close(weights[b, :, :length], torch.softmax(scores[b, :, :length], dim=-1))
        assert torch.all(weights[b, :, length:] == 0)


def test_no_attention_module_for_attention_none() -> None:
    assert build_attention("none", query_size=Q, key_size=C) is None


@pytest.mark.parametrize("kind", KINDS)
def test_weights_sum_to_one_and_are_zero_on_padding(kind: str) -> None:
    attention = build(kind)
    query, values = inputs()
    context, weights = attention(query, attention.precompute_keys(values), values, src_mask())
    assert context.shape == (B, T, C) and weights.shape == (B, T, S)
    assert weights.dtype == torch.float32
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, T))
    assert torch.all(weights.masked_select(~src_mask()[:, None, :].expand(B, T, S)) == 0)
    assert torch.all(weights.masked_select(src_mask()[:, None, :].expand(B, T, S)) > 0)


@pytest.mark.parametrize("kind", KINDS)
def test_padded_source_states_do_not_change_the_context(kind: str) -> None:
    attention = build(kind)
    query, values = inputs()
    polluted = values.clone()
    polluted[~src_mask()] = 1e3
    context, weights = attention(query, attention.precompute_keys(values), values, src_mask())
    polluted_context, polluted_weights = attention(query, attention.precompute_keys(polluted), polluted, src_mask())
    torch.testing.assert_close(weights, polluted_weights, rtol=0, atol=0)
    torch.testing.assert_close(context, polluted_context)


@pytest.mark.parametrize("kind", KINDS)
def test_context_is_the_weighted_sum_of_values(kind: str) -> None:
    attention = build(kind)
    query, values = inputs()
    context, weights = attention(query, attention.precompute_keys(values), values, src_mask())
    torch.testing.assert_close(context, torch.einsum("bts,bsc->btc", weights, values))


def test_weighted_context_sums_the_values_with_any_weights() -> None:
    # Weights that do not sum to 1 and a bf16 copy of the values: the helper must neither renormalise
    # the weights nor keep float32 when the values are bf16 (the decoder's input under autocast).
    generator = torch.Generator().manual_seed(2)
    weights, values = torch.rand(B, T, S, generator=generator) * 3, torch.randn(B, S, C, generator=generator)
    expected = torch.zeros(B, T, C)
    for b in range(B):
        for t in range(T):
            for s in range(S):
                expected[b, t] += weights[b, t, s] * values[b, s]
    torch.testing.assert_close(weighted_context(weights, values), expected)
    in_bf16 = weighted_context(weights, values.bfloat16())
    assert in_bf16.dtype == torch.bfloat16
    torch.testing.assert_close(in_bf16.float(), expected, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("kind", KINDS)
def test_one_query_at_a_time_equals_all_queries_at_once(kind: str) -> None:
    attention = build(kind)
    query, values = inputs()
    keys = attention.precompute_keys(values)
    context, weights = attention(query, keys, values, src_mask())
    for t in range(T):
        context_t, weights_t = attention(query[:, t:t + 1], keys, values, src_mask())
        torch.testing.assert_close(context_t[:, 0], context[:, t])
        torch.testing.assert_close(weights_t[:, 0], weights[:, t])


def test_bahdanau_scores_follow_the_additive_equation() -> None:
    attention = build("bahdanau")
    query, values = inputs()
    _, weights = attention(query, attention.precompute_keys(values), values, src_mask())
    w_q, b_q = attention.query_proj.weight, attention.query_proj.bias
    w_k, v = attention.key_proj.weight, attention.energy.weight[0]
    b, t, length = 1, 2, int(SRC_LENGTHS[1])
    scores = torch.stack([v @ torch.tanh(w_q @ query[b, t] + b_q + w_k @ values[b, s]) for s in range(length)])
    torch.testing.assert_close(weights[b, t, :length], torch.softmax(scores, dim=0))


def test_luong_dot_and_general_scores_follow_their_equations() -> None:
    query, values = inputs()
    dot, general = build("luong_dot"), build("luong_general")
    _, dot_weights = dot(query, dot.precompute_keys(values), values, src_mask())
    _, general_weights = general(query, general.precompute_keys(values), values, src_mask())
    w_a = general.key_proj.weight
    b, t, length = 0, 1, int(SRC_LENGTHS[0])
    dot_scores = torch.stack([query[b, t] @ values[b, s] for s in range(length)])
    general_scores = torch.stack([query[b, t] @ (w_a @ values[b, s]) for s in range(length)])
    torch.testing.assert_close(dot_weights[b, t, :length], torch.softmax(dot_scores, dim=0))
    torch.testing.assert_close(general_weights[b, t, :length], torch.softmax(general_scores, dim=0))


def test_luong_dot_rejects_different_query_and_key_sizes() -> None:
    with pytest.raises(ValueError, match="query_size == key_size"):
        LuongAttention(query_size=Q, key_size=Q + 1, general=False)


@pytest.mark.parametrize("kind", KINDS)
def test_softmax_stays_float32_under_bf16_autocast(kind: str) -> None:
    attention = build(kind)
    query, values = inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        context, weights = attention(query, attention.precompute_keys(values), values, src_mask())
    assert weights.dtype == torch.float32
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, T), rtol=0, atol=1e-6)
    assert torch.all(weights.masked_select(~src_mask()[:, None, :].expand(B, T, S)) == 0)
    assert torch.isfinite(context).all()


@pytest.mark.parametrize("chunk_elements", [1, 3 * 5 * 8, 1 << 19])  # a row per chunk, 3 rows (7 = 3+3+1), all
def test_search_attention_in_chunks_equals_the_training_form(monkeypatch: pytest.MonkeyPatch,
                                                             chunk_elements: int) -> None:
    from seq2seq.model import attention as attention_module

    monkeypatch.setattr(attention_module, "ENERGY_CHUNK_ELEMENTS", chunk_elements)
    torch.manual_seed(0)
    query, keys, values = torch.randn(7, 8), torch.randn(7, 5, 8), torch.randn(7, 5, 6)
    mask_bias = torch.zeros(7, 5)
    mask_bias[2, 3:] = float("-inf")
    energy = torch.randn(8)
    kept = attention_module.additive_step(query, keys, values, mask_bias, energy, keep_energies=True)
    chunked = attention_module.additive_step(query, keys, values, mask_bias, energy, keep_energies=False)
    assert chunked[2] is None
    torch.testing.assert_close(chunked[0], kept[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(chunked[1], kept[1], rtol=0, atol=1e-6)
    assert float(kept[1][2, 3:].abs().sum()) == 0.0  # padding gets no weight
    expected_scores = torch.tanh(query[:, None, :] + keys) @ energy
    torch.testing.assert_close(kept[1], torch.softmax(expected_scores + mask_bias, -1))
