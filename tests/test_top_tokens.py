"""The k best tokens of a step without the (N, V) log-probabilities (model/top_tokens.py), and the searches that
use them: the same choices and log-probabilities as masking log_softmax and taking its top k."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from seq2seq.config import DecodeConfig, ModelConfig
from seq2seq.ids import BOS_ID, EOS_ID, PAD_ID
from seq2seq.model.seq2seq import Seq2Seq
from seq2seq.model.top_tokens import search_projection, top_k_by_blocks, top_log_probs
from seq2seq.search import beam_search, greedy_search

BANNED = (PAD_ID, BOS_ID)


def _reference(features: Tensor, output: nn.Linear, k: int) -> tuple[Tensor, Tensor]:
    """What the searches did before: log_softmax over the vocabulary, banned columns to -inf, then top k."""
    log_probs = torch.log_softmax(output(features).float(), dim=-1)
    log_probs[:, list(BANNED)] = float("-inf")
    return log_probs.topk(k, dim=1)


def _output_layer(vocab: int, bias: bool, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    layer = nn.Linear(16, vocab, bias=bias)
    with torch.no_grad():
        layer.weight.mul_(5.0)  # sharp distributions: no near-ties among the top tokens
    return layer


@pytest.mark.parametrize("k", [1, 5])
@pytest.mark.parametrize("block_rows", [None, 7, 64, 1000])
@pytest.mark.parametrize("bias", [True, False])
def test_top_log_probs_equal_the_top_of_the_masked_log_softmax(k: int, block_rows: int | None, bias: bool) -> None:
    output = _output_layer(300, bias)
    features = torch.randn(150, 16)
    log_probs, ids = top_log_probs(features, output, k, BANNED, block_rows=block_rows)
    expected_log_probs, expected_ids = _reference(features, output, k)
    assert log_probs.dtype == torch.float32 and log_probs.shape == (150, k) and ids.shape == (150, k)
    assert torch.equal(ids, expected_ids)
    # The products differ from F.linear's in summation order (blocks of 7 rows take other GEMM kernels, and
    # two threads split them otherwise): a few fp32 ulps of the logits, which log_softmax's x - lse carries
    # whole into results near 0. A wrong column or row would be off by whole units.
    atol = 8 * torch.finfo(torch.float32).eps * float(output(features).detach().abs().max())
    torch.testing.assert_close(log_probs, expected_log_probs, rtol=0, atol=atol)


@pytest.mark.parametrize("columns", [1000, 1037, 450, 30])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_top_k_by_blocks_equals_topk(columns: int, k: int) -> None:
    torch.manual_seed(columns + k)
    values = torch.randn(40, columns) * 4
    values[:5, -3:] = 50.0  # the best values in the columns after the last whole block
    values[5:10, :7] = 50.0  # ... in the first block
    values[10:12] = float("-inf")
    values[10:12, 17] = 1.0  # one finite value in a row of -inf
    best, ids = top_k_by_blocks(values, k, width=100)
    expected_best, expected_ids = values.topk(k, dim=1)
    assert torch.equal(best, expected_best)
    # Where values tie, topk's order among them is unspecified: the ids must point at the same values.
    assert torch.equal(values.gather(1, ids), expected_best)
    assert torch.equal(ids[12:], expected_ids[12:])  # rows 12.. are continuous random values: no ties


def test_top_k_by_blocks_reads_strided_and_offset_views() -> None:
    base = torch.randn(520, 31)
    for view in (base.t(), base.t()[1:, 5:]):  # column stride 31; then a view that starts inside the storage
        best, ids = top_k_by_blocks(view, 4, width=100)
        expected = view.topk(4, dim=1)
        assert torch.equal(best, expected.values) and torch.equal(ids, expected.indices)


def test_top_k_by_blocks_for_one_picks_the_first_of_tied_maxima_as_max_does() -> None:
    values = torch.randn(6, 730)
    values[0, [5, 405]] = 9.0
    values[1, [699, 720]] = 9.0  # the second one in the tail
    values[2, [150, 160, 705]] = 9.0
    values[3, :] = 1.0  # all tied
    best, ids = top_k_by_blocks(values, 1, width=100)
    expected_best, expected_ids = values.max(dim=1, keepdim=True)
    assert torch.equal(best, expected_best) and torch.equal(ids, expected_ids)
    assert ids[:4, 0].tolist() == [5, 699, 150, 0]


def test_banned_tokens_are_never_chosen_but_count_in_the_normalisation() -> None:
    output = _output_layer(50, bias=True)
    with torch.no_grad():
        output.bias[PAD_ID] = output.bias[BOS_ID] = 100.0  # the most probable tokens by far
    features = torch.randn(9, 16)
    log_probs, ids = top_log_probs(features, output, 3, BANNED, block_rows=4)
    assert not bool(torch.isin(ids, torch.tensor(BANNED)).any())
    # PAD and BOS hold nearly all the mass, so what is left to the chosen tokens is tiny: not renormalised.
    assert bool((log_probs < -50).all())
    expected_log_probs, expected_ids = _reference(features, output, 3)
    assert torch.equal(ids, expected_ids)
    torch.testing.assert_close(log_probs, expected_log_probs, rtol=1e-6, atol=1e-4)


def test_k_beyond_the_vocabulary_is_the_whole_vocabulary() -> None:
    output = _output_layer(6, bias=True)
    log_probs, ids = top_log_probs(torch.randn(4, 16), output, 10, BANNED)
    assert ids.shape == (4, 6)
    assert bool(torch.isneginf(log_probs[:, -2:]).all())  # the two banned tokens come last


def test_under_bf16_autocast_the_top_tokens_follow_the_bf16_logits() -> None:
    output = _output_layer(300, bias=True)
    features = torch.randn(70, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        log_probs, ids = top_log_probs(features, output, 4, BANNED, block_rows=32)
        expected_log_probs, expected_ids = _reference(features, output, 4)
    assert log_probs.dtype == torch.float32
    assert torch.equal(ids, expected_ids)
    torch.testing.assert_close(log_probs, expected_log_probs, rtol=0, atol=1e-4)


@pytest.mark.parametrize("bias", [True, False])
def test_the_search_projection_carries_the_bias_in_its_last_row(bias: bool) -> None:
    output = _output_layer(300, bias)
    projection = search_projection(output, torch.float32)
    assert projection.shape == (17 if bias else 16, 300) and projection.is_contiguous()
    features = torch.randn(9, 16)
    rows = torch.cat([features, torch.ones(9, 1)], 1) if bias else features
    torch.testing.assert_close(rows @ projection, output(features).detach(), rtol=0, atol=1e-5)
    assert search_projection(output, torch.bfloat16).dtype == torch.bfloat16


def test_the_projection_runs_in_autocasts_dtype_or_else_the_weights_own() -> None:
    from seq2seq.model.top_tokens import projection_dtype

    cpu = torch.device("cpu")
    output = _output_layer(300, bias=True)
    assert projection_dtype(output, cpu) == torch.float32
    assert projection_dtype(output.double(), cpu) == torch.float64  # no silent fp32 products for fp64 layers
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert projection_dtype(output, cpu) == torch.bfloat16


@torch.no_grad()
def test_decode_top_keeps_its_projection_for_a_search_and_the_next_search_sees_new_weights() -> None:
    model = _model("bahdanau")
    src_ids, src_lengths = torch.randint(4, 40, (3, 5)), torch.tensor([5, 2, 4])
    enc = model.encode(src_ids, src_lengths)
    state, prev = model.init_state(enc), torch.full((3,), BOS_ID)
    first = model.decode_top(prev, state, enc, 2, BANNED)
    kept = model.decoder.__dict__["_arranged_cache"]["projection"][1]
    model.decode_top(prev, state, enc, 2, BANNED)
    assert model.decoder.__dict__["_arranged_cache"]["projection"][1] is kept  # arranged once per search, not per step
    model.decoder.output.bias.add_(torch.arange(40.0))  # in place, as a fused optimizer step changes it
    enc = model.encode(src_ids, src_lengths)  # a new search
    after = model.decode_top(prev, model.init_state(enc), enc, 2, BANNED)
    expected = model.decode_step(prev, model.init_state(enc), enc).log_probs
    expected[:, list(BANNED)] = float("-inf")
    assert torch.equal(after.ids, expected.topk(2, dim=1).indices)
    assert not torch.equal(after.ids, first.ids)


def _model(attention: str, vocab: int = 40, seed: int = 0) -> Seq2Seq:
    torch.manual_seed(seed)
    cfg = ModelConfig(embedding_size=8, hidden_size=6, num_layers=2, bidirectional=True, decoder_hidden_size=10,
                      attention=attention, dropout=0.0)
    model = Seq2Seq.from_config(cfg, src_vocab_size=vocab, tgt_vocab_size=vocab).eval()
    with torch.no_grad():
        model.decoder.output.weight.mul_(4.0)
    return model


@pytest.mark.parametrize("attention", ["bahdanau", "luong_general", "none"])
@torch.no_grad()
def test_decode_top_is_decode_step_reduced_to_its_best_tokens(attention: str) -> None:
    model = _model(attention)
    src_ids, src_lengths = torch.randint(4, 40, (5, 7)), torch.tensor([7, 3, 5, 1, 6])
    enc = model.encode(src_ids, src_lengths)
    state = model.init_state(enc)
    prev = torch.full((5,), BOS_ID)
    for _ in range(3):
        full = model.decode_step(prev, state, enc)
        top = model.decode_top(prev, state, enc, 3, BANNED)
        masked = full.log_probs.clone()
        masked[:, list(BANNED)] = float("-inf")
        expected_log_probs, expected_ids = masked.topk(3, dim=1)
        assert torch.equal(top.ids, expected_ids)
        torch.testing.assert_close(top.log_probs, expected_log_probs, rtol=0, atol=1e-5)
        torch.testing.assert_close(top.state.hidden, full.state.hidden, rtol=0, atol=0)
        if attention != "none":
            torch.testing.assert_close(top.attention, full.attention, rtol=0, atol=0)
        state, prev = top.state, top.ids[:, 0]


class _StepOnly:
    """A model seen through decode_step alone (as a model without decode_top is): the full-vocabulary path."""

    def __init__(self, model: Seq2Seq) -> None:
        self.model = model

    def encode(self, src_ids, src_lengths):
        return self.model.encode(src_ids, src_lengths)

    def init_state(self, enc):
        return self.model.init_state(enc)

    def decode_step(self, prev_ids, state, enc):
        return self.model.decode_step(prev_ids, state, enc)


class _Counting(_StepOnly):
    """Both steps, counted."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__(model)
        self.full = self.top = 0

    def decode_step(self, prev_ids, state, enc):
        self.full += 1
        return super().decode_step(prev_ids, state, enc)

    def decode_top(self, prev_ids, state, enc, k, banned):
        self.top += 1
        return self.model.decode_top(prev_ids, state, enc, k, banned)


SEARCH_OPTIONS = [
    dict(max_length_a=1.5, max_length_b=5),
    dict(max_length_a=0.0, max_length_b=4),  # every sentence reaches its limit: the last step forces EOS
    dict(max_length_a=1.5, max_length_b=5, min_length=3),
    dict(max_length_a=1.5, max_length_b=5, no_repeat_ngram=2),
]


@pytest.mark.parametrize("beam_size", [1, 4])
@pytest.mark.parametrize("changes", SEARCH_OPTIONS)
@pytest.mark.parametrize("attention", ["bahdanau", "none"])
def test_searches_through_decode_top_find_what_the_full_vocabulary_path_finds(beam_size: int, changes: dict,
                                                                                attention: str) -> None:
    model = _model(attention, seed=beam_size)
    src_ids = torch.randint(4, 40, (6, 8))
    src_lengths = torch.tensor([8, 2, 5, 3, 8, 6])
    options = DecodeConfig(beam_size=beam_size, nbest=beam_size, length_penalty=1.0, **changes)
    run = (lambda m: [[h] for h in greedy_search(m, src_ids, src_lengths, options)]) if beam_size == 1 else \
        (lambda m: beam_search(m, src_ids, src_lengths, options))
    with torch.no_grad():
        counting = _Counting(model)
        fast, full = run(counting), run(_StepOnly(model))
    for fast_nbest, full_nbest in zip(fast, full):
        assert [h.tgt_ids for h in fast_nbest] == [h.tgt_ids for h in full_nbest]
        assert [h.score for h in fast_nbest] == pytest.approx([h.score for h in full_nbest], rel=1e-5)
    assert counting.top > 0  # the early steps take the fast path ...
    if changes.get("min_length") or changes.get("no_repeat_ngram") or changes["max_length_a"] == 0.0:
        assert counting.full > 0  # ... and a step where a rule bans more than PAD and BOS the full one
    for nbest in fast:
        for hypothesis in nbest:
            assert not set(hypothesis.tgt_ids) & {PAD_ID, BOS_ID, EOS_ID}
