"""Greedy and beam search: scripted probabilities, equivalences, and exhaustive enumeration on a tiny Seq2Seq."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

from seq2seq.config import DecodeConfig, ModelConfig
from seq2seq.model.seq2seq import Seq2Seq
from seq2seq.search import Hypothesis, beam_search, greedy_search, length_penalty, search
from seq2seq.ids import BOS_ID, EOS_ID, PAD_ID, UNK_ID

A, B = 4, 5  # the two real tokens of the scripted model
SCRIPT_VOCAB = 6


@dataclass
class _PrefixState:
    """The scripted decoder's state: each hypothesis's output so far, (N, t)."""

    prefix: Tensor

    def index_select(self, idx: Tensor) -> _PrefixState:
        return _PrefixState(self.prefix.index_select(0, idx))


@dataclass
class _ScriptEncoding:
    script: Tensor  # (N,) which script each hypothesis follows

    def index_select(self, idx: Tensor) -> _ScriptEncoding:
        return _ScriptEncoding(self.script.index_select(0, idx))


class ScriptedModel:
    """A fake model: the next-token distribution is a table lookup on (source's first token, output prefix).

    Unlisted prefixes give EOS 0.9 and 0.1 spread over UNK, A and B.
    """

    def __init__(self, scripts: dict[int, dict[tuple[int, ...], dict[int, float]]]) -> None:
        self.scripts = scripts

    def encode(self, src_ids: Tensor, src_lengths: Tensor) -> _ScriptEncoding:
        return _ScriptEncoding(src_ids[:, 0].clone())

    def init_state(self, enc: _ScriptEncoding) -> _PrefixState:
        return _PrefixState(torch.empty(enc.script.size(0), 0, dtype=torch.long))

    def decode_step(self, prev_ids: Tensor, state: _PrefixState, enc: _ScriptEncoding):
        if state.prefix.size(1) > 0 or bool((prev_ids != BOS_ID).any()):
            state = _PrefixState(torch.cat([state.prefix, prev_ids[:, None]], dim=1))
        # The StepModel contract: N state rows over B encoder rows, row n reading sentence n // (N / B).
        assert len(prev_ids) % enc.script.size(0) == 0
        scripts = enc.script.repeat_interleave(len(prev_ids) // enc.script.size(0))
        rows = [self._distribution(int(script), tuple(prefix))
                for script, prefix in zip(scripts, state.prefix.tolist())]
        return torch.tensor(rows).log(), state, None

    def _distribution(self, script: int, prefix: tuple[int, ...]) -> list[float]:
        probs = self.scripts.get(script, {}).get(prefix, {EOS_ID: 0.9, UNK_ID: 0.1 / 3, A: 0.1 / 3, B: 0.1 / 3})
        return [probs.get(token, 0.0) for token in range(SCRIPT_VOCAB)]


# Greedy takes A (0.5) then A (0.4) then EOS (0.9): P = 0.18. The best sequence is B EOS: P = 0.36.
GARDEN_PATH = {(): {A: 0.5, B: 0.4, EOS_ID: 0.1}, (A,): {A: 0.4, B: 0.3, EOS_ID: 0.3}, (B,): {EOS_ID: 0.9, A: 0.1}}
# Loves repeating A: greedy gives A A A ... up to the length limit.
REPEATER = {(): {A: 0.9, EOS_ID: 0.1}, (A,): {A: 0.9, EOS_ID: 0.1}, (A, A): {A: 0.9, B: 0.06, EOS_ID: 0.04},
            (A, A, A): {A: 0.9, B: 0.05, EOS_ID: 0.05}}


def _src(*first_tokens: int, length: int = 3) -> tuple[Tensor, Tensor]:
    src_ids = torch.tensor([[token] * length for token in first_tokens])
    return src_ids, torch.full((len(first_tokens),), length)


def _options(**changes) -> DecodeConfig:
    base = {"beam_size": 1, "length_penalty": 0.0, "max_length_a": 0.0, "max_length_b": 6}
    return DecodeConfig(**(base | changes))


def test_greedy_follows_the_most_probable_token_and_beam_finds_the_better_sequence():
    model = ScriptedModel({7: GARDEN_PATH})
    src_ids, src_lengths = _src(7)
    [greedy] = greedy_search(model, src_ids, src_lengths, _options())
    assert greedy.tgt_ids == [A, A]
    assert greedy.log_prob == pytest.approx(math.log(0.5 * 0.4 * 0.9), abs=1e-5)
    [[best, second]] = beam_search(model, src_ids, src_lengths, _options(beam_size=2, nbest=2))
    assert best.tgt_ids == [B] and best.log_prob == pytest.approx(math.log(0.4 * 0.9), abs=1e-5)
    assert second.tgt_ids == [A, A] and second.log_prob == pytest.approx(math.log(0.18), abs=1e-5)


# EOS first has P = 0.5, score log 0.5 = -0.69. A A A EOS has P = 0.3 * 0.98^3 and, with alpha = 2,
# lp(4) = (9/6)^2 = 2.25: score -1.265 / 2.25 = -0.56, better. After step 0 the open beam "A" has
# log P = -1.20: a bound using the next length, -1.20 / lp(2) = -0.88, would stop the search there;
# the exact bound -1.20 / lp(M + 1) = -0.54 keeps it going.
LATE_BLOOMER = {(): {EOS_ID: 0.5, A: 0.3, B: 0.2}, (A,): {A: 0.98, EOS_ID: 0.02},
                (A, A): {A: 0.98, EOS_ID: 0.02}, (A, A, A): {EOS_ID: 0.98, A: 0.02}}


def test_early_stop_is_exact_under_length_normalisation():
    model = ScriptedModel({9: LATE_BLOOMER})
    src_ids, src_lengths = _src(9)
    options = _options(beam_size=2, nbest=1, length_penalty=2.0, max_length_b=3)
    [[best]] = beam_search(model, src_ids, src_lengths, options)
    assert best.tgt_ids == [A, A, A]
    assert best.score == pytest.approx(math.log(0.3 * 0.98 ** 3) / 2.25, abs=1e-5)
    [[_, second]] = beam_search(model, src_ids, src_lengths, _options(beam_size=2, nbest=2, length_penalty=2.0,
                                                                      max_length_b=3))
    assert second.tgt_ids == [] and second.score == pytest.approx(math.log(0.5), abs=1e-5)
    [greedy] = greedy_search(model, src_ids, src_lengths, options)
    assert greedy.tgt_ids == []


def test_scripted_beam_size_one_is_greedy():
    model = ScriptedModel({7: GARDEN_PATH, 8: REPEATER})
    src_ids, src_lengths = _src(7, 8)
    greedy = greedy_search(model, src_ids, src_lengths, _options())
    beam = beam_search(model, src_ids, src_lengths, _options(beam_size=1))
    assert [[h.tgt_ids] for h in greedy] == [[h.tgt_ids for h in nbest] for nbest in beam]


def test_output_limit_is_a_times_source_length_plus_b_and_min_length_holds():
    model = ScriptedModel({8: REPEATER, 7: GARDEN_PATH})
    src_ids, src_lengths = _src(8, length=4)
    options = _options(max_length_a=0.5, max_length_b=1)  # floor(0.5 * 4 + 1) = 3 tokens before EOS
    [greedy] = greedy_search(model, src_ids, src_lengths, options)
    assert greedy.tgt_ids == [A, A, A]
    [[beam]] = beam_search(model, src_ids, src_lengths, _options(max_length_a=0.5, max_length_b=1, beam_size=3))
    assert len(beam.tgt_ids) <= 3
    src_ids, src_lengths = _src(7)
    [short] = greedy_search(model, src_ids, src_lengths, _options(min_length=3))
    assert len(short.tgt_ids) >= 3 and short.tgt_ids[:2] == [A, A]


def test_no_repeat_ngram_blocks_repeats():
    model = ScriptedModel({8: REPEATER})
    src_ids, src_lengths = _src(8)
    [plain] = greedy_search(model, src_ids, src_lengths, _options())
    assert plain.tgt_ids[:4] == [A, A, A, A]
    [blocked] = greedy_search(model, src_ids, src_lengths, _options(no_repeat_ngram=2))
    assert blocked.tgt_ids[:2] == [A, A] and blocked.tgt_ids[2] != A
    assert not _repeated_ngrams(blocked.tgt_ids, 2)
    for nbest in beam_search(model, src_ids, src_lengths, _options(beam_size=4, nbest=4, no_repeat_ngram=1)):
        assert nbest and all(len(set(h.tgt_ids)) == len(h.tgt_ids) for h in nbest)
    # UNK, A and B each once, then min_length would block EOS too: EOS stays the way out.
    [cornered] = greedy_search(ScriptedModel({}), src_ids, src_lengths, _options(no_repeat_ngram=1, min_length=5))
    assert sorted(cornered.tgt_ids) == [UNK_ID, A, B] and math.isfinite(cornered.score)


def _repeated_ngrams(tokens: list[int], n: int) -> bool:
    ngrams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return len(ngrams) != len(set(ngrams))


# --- a tiny real Seq2Seq ---------------------------------------------------------------------------

TINY_VOCAB = 7  # PAD UNK BOS EOS + three real tokens


def _tiny_model(attention: str = "bahdanau", seed: int = 0, vocab: int = TINY_VOCAB) -> Seq2Seq:
    torch.manual_seed(seed)
    cfg = ModelConfig(embedding_size=8, hidden_size=6, num_layers=2, bidirectional=True, decoder_hidden_size=10,
                      attention=attention, dropout=0.0)
    model = Seq2Seq.from_config(cfg, src_vocab_size=vocab, tgt_vocab_size=vocab).eval()
    with torch.no_grad():  # sharper distributions than the default init, so hypotheses differ clearly
        model.decoder.output.weight.mul_(4.0)
    return model


def _batch(sentences: list[list[int]]) -> tuple[Tensor, Tensor]:
    src_ids = torch.full((len(sentences), max(map(len, sentences))), PAD_ID)
    for row, sentence in enumerate(sentences):
        src_ids[row, :len(sentence)] = torch.tensor(sentence)
    return src_ids, torch.tensor([len(s) for s in sentences])


SOURCES = [[4, 5, 6, 4, 5], [6, 6], [5, 4, 6, 6]]


@torch.no_grad()
def _sequence_log_probs(model: Seq2Seq, src_ids: Tensor, src_lengths: Tensor,
                        outputs: list[tuple[int, ...]]) -> list[float]:
    """log P(y + EOS | x) for each output y of a single source sentence, by stepping the model."""
    length = len(outputs[0])
    src_ids, src_lengths = src_ids.expand(len(outputs), -1), src_lengths.expand(len(outputs))
    enc = model.encode(src_ids, src_lengths)
    state = model.init_state(enc)
    targets = torch.tensor([list(y) + [EOS_ID] for y in outputs]).view(len(outputs), length + 1)
    prev = torch.full((len(outputs),), BOS_ID)
    total = torch.zeros(len(outputs))
    for step in range(length + 1):
        log_probs, state, _ = model.decode_step(prev, state, enc)
        total += log_probs.gather(1, targets[:, step:step + 1])[:, 0]
        prev = targets[:, step]
    return total.tolist()


def _enumerate_best(model: Seq2Seq, src_ids: Tensor, src_lengths: Tensor, max_tokens: int,
                    alpha: float) -> list[tuple[float, tuple[int, ...]]]:
    """Every output of up to max_tokens tokens (+ EOS) with its GNMT score, best first."""
    tokens = [UNK_ID] + list(range(EOS_ID + 1, TINY_VOCAB))
    scored = []
    for length in range(max_tokens + 1):
        outputs = list(itertools.product(tokens, repeat=length))
        for y, log_prob in zip(outputs, _sequence_log_probs(model, src_ids, src_lengths, outputs)):
            scored.append((log_prob / length_penalty(length + 1, alpha), y))
    return sorted(scored, reverse=True)


@pytest.mark.parametrize("alpha", [0.0, 1.0, 2.5])
def test_wide_beam_finds_the_exhaustive_best_under_the_length_penalty(alpha: float):
    model = _tiny_model()
    src_ids, src_lengths = _batch(SOURCES)
    # 3 tokens before EOS: 4 + 16 + 64 + 1 = 85 outputs per sentence; 4^2 * 5 = 80 candidates at most per step.
    options = DecodeConfig(beam_size=100, nbest=5, length_penalty=alpha, max_length_a=0.0, max_length_b=3)
    results = beam_search(model, src_ids, src_lengths, options)
    for row, nbest in enumerate(results):
        expected = _enumerate_best(model, src_ids[row:row + 1, :int(src_lengths[row])], src_lengths[row:row + 1],
                                   max_tokens=3, alpha=alpha)[:5]
        assert [h.score for h in nbest] == pytest.approx([score for score, _ in expected], abs=1e-4)
        assert tuple(nbest[0].tgt_ids) == expected[0][1]


@pytest.mark.parametrize("attention", ["bahdanau", "luong_general", "none"])
def test_beam_size_one_returns_exactly_the_greedy_output(attention: str):
    model = _tiny_model(attention, seed=3, vocab=12)
    src_ids, src_lengths = _batch(SOURCES)
    options = DecodeConfig(beam_size=1, length_penalty=1.0, max_length_a=1.5, max_length_b=4)
    greedy = greedy_search(model, src_ids, src_lengths, options, return_attention=True)
    beam = beam_search(model, src_ids, src_lengths, options, return_attention=True)
    for g, [b] in zip(greedy, beam):
        assert g.tgt_ids == b.tgt_ids
        assert g.score == pytest.approx(b.score, abs=1e-5)
        if attention == "none":
            assert g.attention is None and b.attention is None
        else:
            torch.testing.assert_close(g.attention, b.attention)


def test_nbest_is_sorted_and_a_sentence_alone_equals_it_inside_a_batch():
    model = _tiny_model(seed=1, vocab=12)
    options = DecodeConfig(beam_size=5, nbest=5, length_penalty=1.0, max_length_a=1.0, max_length_b=3)
    src_ids, src_lengths = _batch(SOURCES)
    together = beam_search(model, src_ids, src_lengths, options)
    for row, sentence in enumerate(SOURCES):
        assert len(together[row]) == 5
        scores = [h.score for h in together[row]]
        assert scores == sorted(scores, reverse=True)
        for h in together[row]:
            assert h.score == pytest.approx(h.log_prob / length_penalty(len(h.tgt_ids) + 1, 1.0))
        alone = beam_search(model, *_batch([sentence]), options)[0]
        assert [h.tgt_ids for h in alone] == [h.tgt_ids for h in together[row]]
        assert [h.score for h in alone] == pytest.approx(scores, abs=1e-5)
    greedy_alone = greedy_search(model, *_batch(SOURCES[1:2]), options)[0]
    assert greedy_alone.tgt_ids == greedy_search(model, src_ids, src_lengths, options)[1].tgt_ids


def test_attention_rows_cover_each_output_token_and_the_real_source():
    model = _tiny_model(seed=2, vocab=12)
    src_ids, src_lengths = _batch(SOURCES)
    options = DecodeConfig(beam_size=3, nbest=2, max_length_a=1.0, max_length_b=2)
    for sentence, nbest in zip(SOURCES, search(model, src_ids, src_lengths, options, return_attention=True)):
        for h in nbest:
            assert h.attention.shape == (len(h.tgt_ids) + 1, len(sentence))
            torch.testing.assert_close(h.attention.sum(dim=1), torch.ones(len(h.tgt_ids) + 1))


def test_search_with_beam_size_one_wraps_greedy_in_nbest_lists():
    model = _tiny_model(seed=4, vocab=12)
    src_ids, src_lengths = _batch(SOURCES)
    options = DecodeConfig(beam_size=1, max_length_a=1.0, max_length_b=2)
    results = search(model, src_ids, src_lengths, options)
    assert all(len(nbest) == 1 and isinstance(nbest[0], Hypothesis) for nbest in results)
    assert [n[0].tgt_ids for n in results] == [h.tgt_ids for h in greedy_search(model, src_ids, src_lengths, options)]


class _PrecisionRecorder:
    """Wraps a model; records the autocast dtype and grad mode that each decode_step / decode_top runs under."""

    def __init__(self, model) -> None:
        self.model = model
        self.seen: set[tuple[torch.dtype | None, bool, bool]] = set()

    def encode(self, src_ids, src_lengths):
        return self.model.encode(src_ids, src_lengths)

    def init_state(self, enc):
        return self.model.init_state(enc)

    def decode_step(self, prev_ids, state, enc):
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
        self.seen.add((dtype, torch.is_grad_enabled(), torch.is_inference_mode_enabled()))
        return self.model.decode_step(prev_ids, state, enc)

    def decode_top(self, prev_ids, state, enc, k, banned):
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
        self.seen.add((dtype, torch.is_grad_enabled(), torch.is_inference_mode_enabled()))
        return self.model.decode_top(prev_ids, state, enc, k, banned)


@pytest.mark.parametrize("amp, expected", [("off", None), ("bf16", torch.bfloat16)])
def test_search_runs_in_the_precision_decode_amp_asks_for(amp: str, expected: torch.dtype | None):
    recorder = _PrecisionRecorder(_tiny_model(seed=4, vocab=12))
    src_ids, src_lengths = _batch(SOURCES)
    for beam_size in (1, 3):
        options = DecodeConfig(beam_size=beam_size, max_length_a=1.0, max_length_b=2, amp=amp)
        results = search(recorder, src_ids, src_lengths, options)
        assert len(results) == len(SOURCES) and all(nbest for nbest in results)
    # No gradients, and not inference mode: autocast keeps its cast weights only outside inference mode.
    assert recorder.seen == {(expected, False, False)}


@pytest.mark.parametrize("attention", ["bahdanau", "luong_general", "luong_dot", "luong_feeding", "none"])
@pytest.mark.parametrize("grad", [False, True])
def test_a_step_over_shared_encoder_rows_equals_one_over_copied_rows(attention: str, grad: bool):
    """Beam search passes one encoder row per sentence for its K beams; the step must not depend on that."""
    torch.manual_seed(2)
    # luong_dot scores h_t . h_s: the decoder as wide as the encoder output (2 x 5, bridge none).
    cfg = ModelConfig(embedding_size=8, hidden_size=5, num_layers=2, bidirectional=True, decoder_hidden_size=10,
                      attention="luong_general" if attention == "luong_feeding" else attention,
                      input_feeding=attention == "luong_feeding", bridge="none", dropout=0.0)
    model = Seq2Seq.from_config(cfg, src_vocab_size=12, tgt_vocab_size=12).eval()
    src_ids, src_lengths = _batch(SOURCES)
    beams = 4
    rows = torch.arange(len(SOURCES)).repeat_interleave(beams)
    with torch.set_grad_enabled(grad):
        enc = model.encode(src_ids, src_lengths)
        state = model.init_state(enc).index_select(rows)
        prev_ids = torch.randint(4, 12, (len(rows),), generator=torch.Generator().manual_seed(0))
        for _ in range(3):  # a few steps, with different hypotheses on the beams of a sentence
            shared = model.decode_step(prev_ids, state, enc)
            copied = model.decode_step(prev_ids, state, enc.index_select(rows))
            torch.testing.assert_close(shared.log_probs, copied.log_probs, rtol=0, atol=1e-5)
            torch.testing.assert_close(shared.state.hidden, copied.state.hidden, rtol=0, atol=1e-5)
            if attention != "none":
                torch.testing.assert_close(shared.attention, copied.attention, rtol=0, atol=1e-6)
            state, prev_ids = shared.state, shared.log_probs.argmax(1)
