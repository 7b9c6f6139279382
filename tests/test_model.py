"""Seq2Seq: shapes, padding invariance, teacher forcing == stepping, the bridge, introspection, bad configs."""

from __future__ import annotations

import dataclasses
import math
import logging
from pathlib import Path

import pytest
import torch

from seq2seq.config import ModelConfig, load_config
from seq2seq.errors import ConfigError
from seq2seq.model.encoder import join_directions
from seq2seq.model.seq2seq import Seq2Seq

VOCAB = 17
TINY = ModelConfig(embedding_size=6, hidden_size=5, num_layers=2, bidirectional=True, decoder_hidden_size=7,
                   dropout=0.2)
VARIANTS = {
    "none": dict(attention="none"),
    "none-context_every_step": dict(attention="none", context_every_step=True),
    "none-bridge_none-uni-L3": dict(attention="none", bridge="none", bidirectional=False, num_layers=3,
                                    decoder_hidden_size=5),
    "bahdanau": dict(attention="bahdanau"),
    "bahdanau-L1-uni": dict(attention="bahdanau", num_layers=1, bidirectional=False),
    "bahdanau-tied-shared": dict(attention="bahdanau", tied_embeddings=True, share_embeddings=True),
    "luong_dot": dict(attention="luong_dot", decoder_hidden_size=10),
    "luong_general": dict(attention="luong_general"),
    "luong_general-input_feeding": dict(attention="luong_general", input_feeding=True),
    "luong_dot-input_feeding-bridge_none-tied": dict(attention="luong_dot", input_feeding=True, bridge="none",
                                                     decoder_hidden_size=10, tied_embeddings=True),
}
PARAMS = [pytest.param(kw, id=name) for name, kw in VARIANTS.items()]
SRC_LENGTHS = [6, 3, 1, 5]
TGT_LENGTH = 5


def build(overrides: dict, seed: int = 0) -> Seq2Seq:
    torch.manual_seed(seed)
    return Seq2Seq.from_config(dataclasses.replace(TINY, **overrides), VOCAB, VOCAB).eval()


def batch(lengths: list[int] = SRC_LENGTHS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """src_ids (B, S) padded with 0 after each length, src_lengths (B,), tgt_in_ids (B, T) starting with BOS = 2."""
    generator = torch.Generator().manual_seed(1)
    src_lengths = torch.tensor(lengths)
    src_ids = torch.randint(4, VOCAB, (len(lengths), max(lengths)), generator=generator)
    src_ids[torch.arange(max(lengths))[None, :] >= src_lengths[:, None]] = 0
    tgt_in_ids = torch.randint(4, VOCAB, (len(lengths), TGT_LENGTH), generator=generator)
    tgt_in_ids[:, 0] = 2
    return src_ids, src_lengths, tgt_in_ids


def step_through(model: Seq2Seq, src_ids, src_lengths, tgt_in_ids) -> tuple[torch.Tensor, list]:
    """Log-probs (B, T, V) and per-step attention from feeding tgt_in_ids token by token to decode_step."""
    enc = model.encode(src_ids, src_lengths)
    state = model.init_state(enc)
    log_probs, attention = [], []
    for prev_ids in tgt_in_ids.unbind(1):
        step = model.decode_step(prev_ids, state, enc)
        state = step.state
        log_probs.append(step.log_probs)
        attention.append(step.attention)
    return torch.stack(log_probs, dim=1), attention


@pytest.mark.parametrize("overrides", PARAMS)
@torch.no_grad()
def test_shapes_of_every_entry_point(overrides: dict) -> None:
    model = build(overrides)
    cfg = dataclasses.replace(TINY, **overrides)
    directions = 2 if cfg.bidirectional else 1
    src_ids, src_lengths, tgt_in_ids = batch()
    B, S = src_ids.shape
    enc = model.encode(src_ids, src_lengths)
    assert enc.output.shape == (B, S, directions * cfg.hidden_size)
    assert enc.h_n.shape == (cfg.num_layers * directions, B, cfg.hidden_size)
    assert enc.src_mask.tolist() == [[s < length for s in range(S)] for length in SRC_LENGTHS]
    assert (enc.keys is None) == (cfg.attention == "none")
    state = model.init_state(enc)
    assert state.hidden.shape == (cfg.num_layers, B, cfg.decoder_hidden_size)
    step = model.decode_step(tgt_in_ids[:, 0], state, enc)
    assert step.log_probs.shape == (B, VOCAB) and step.log_probs.dtype == torch.float32
    torch.testing.assert_close(step.log_probs.exp().sum(-1), torch.ones(B))
    assert (step.attention is None) == (cfg.attention == "none")
    log_probs, next_state, attention = step  # also unpacks as a triple
    assert log_probs is step.log_probs and next_state is step.state and attention is step.attention
    assert model(src_ids, src_lengths, tgt_in_ids).shape == (B, TGT_LENGTH, VOCAB)
    assert model.tgt_vocab_size == VOCAB and model.attention_type == cfg.attention


@pytest.mark.parametrize("overrides", PARAMS)
@torch.no_grad()
def test_teacher_forcing_equals_stepping_token_by_token(overrides: dict) -> None:
    model = build(overrides)
    src_ids, src_lengths, tgt_in_ids = batch()
    forced = torch.log_softmax(model(src_ids, src_lengths, tgt_in_ids), dim=-1)
    stepped, step_attention = step_through(model, src_ids, src_lengths, tgt_in_ids)
    torch.testing.assert_close(stepped, forced, rtol=0, atol=1e-5)
    forced_attention = model.introspect(src_ids, src_lengths, tgt_in_ids).attention
    if forced_attention is not None:
        torch.testing.assert_close(torch.stack(step_attention, dim=1), forced_attention, rtol=0, atol=1e-5)


@pytest.mark.parametrize("overrides", PARAMS)
@torch.no_grad()
def test_sentence_decodes_the_same_alone_or_in_a_padded_batch(overrides: dict) -> None:
    model = build(overrides)
    src_ids, src_lengths, tgt_in_ids = batch()
    together = model.introspect(src_ids, src_lengths, tgt_in_ids)
    for b, length in enumerate(SRC_LENGTHS):
        alone = model.introspect(src_ids[b:b + 1, :length], src_lengths[b:b + 1], tgt_in_ids[b:b + 1])
        torch.testing.assert_close(alone.h_n, together.h_n[:, b:b + 1], rtol=0, atol=1e-5)
        torch.testing.assert_close(alone.logits, together.logits[b:b + 1], rtol=0, atol=1e-5)
        if alone.attention is not None:
            torch.testing.assert_close(alone.attention, together.attention[b:b + 1, :, :length], rtol=0, atol=1e-5)
            assert torch.all(together.attention[b, :, length:] == 0)


@pytest.mark.parametrize("overrides", [p for p in PARAMS if p.values[0]["attention"] != "none"])
@torch.no_grad()
def test_attention_weights_sum_to_one_and_are_zero_on_padding(overrides: dict) -> None:
    model = build(overrides)
    src_ids, src_lengths, tgt_in_ids = batch()
    attention = model.introspect(src_ids, src_lengths, tgt_in_ids).attention
    assert attention.shape == (len(SRC_LENGTHS), TGT_LENGTH, max(SRC_LENGTHS))
    assert attention.dtype == torch.float32
    torch.testing.assert_close(attention.sum(-1), torch.ones(len(SRC_LENGTHS), TGT_LENGTH))
    padding = torch.arange(max(SRC_LENGTHS))[None, None, :] >= src_lengths[:, None, None]
    assert torch.all(attention.masked_select(padding) == 0)


@pytest.mark.parametrize("overrides", PARAMS)
@torch.no_grad()
def test_introspection_shows_the_joined_and_bridged_initial_state(overrides: dict) -> None:
    model = build(overrides)
    cfg = dataclasses.replace(TINY, **overrides)
    src_ids, src_lengths, tgt_in_ids = batch()
    seen = model.introspect(src_ids, src_lengths, tgt_in_ids)
    directions = 2 if cfg.bidirectional else 1
    per_layer = seen.h_n.view(cfg.num_layers, directions, len(SRC_LENGTHS), cfg.hidden_size)
    torch.testing.assert_close(seen.joined, torch.cat(list(per_layer.unbind(1)), dim=-1), rtol=0, atol=0)
    if cfg.bridge == "none":
        torch.testing.assert_close(seen.initial, seen.joined, rtol=0, atol=0)
    else:
        for k, layer in enumerate(model.bridge.layers):
            torch.testing.assert_close(seen.initial[k], torch.tanh(layer(seen.joined[k])))
    torch.testing.assert_close(seen.logits, model(src_ids, src_lengths, tgt_in_ids), rtol=0, atol=0)
    assert (seen.attention is None) == (cfg.attention == "none")


@torch.no_grad()
def test_context_every_step_feeds_the_joined_top_layer() -> None:
    model = build(VARIANTS["none-context_every_step"])
    src_ids, src_lengths, tgt_in_ids = batch()
    enc = model.encode(src_ids, src_lengths)
    state = model.init_state(enc)
    torch.testing.assert_close(state.context, join_directions(enc.h_n, 2, True)[-1], rtol=0, atol=0)
    # The context must matter: a different one changes the next-token distribution.
    changed = dataclasses.replace(state, context=torch.zeros_like(state.context))
    assert not torch.allclose(model.decode_step(tgt_in_ids[:, 0], state, enc).log_probs,
                              model.decode_step(tgt_in_ids[:, 0], changed, enc).log_probs)


@torch.no_grad()
def test_input_feeding_carries_the_previous_readout_into_the_next_step() -> None:
    model = build(VARIANTS["luong_general-input_feeding"])
    src_ids, src_lengths, tgt_in_ids = batch()
    enc = model.encode(src_ids, src_lengths)
    first = model.init_state(enc)
    assert torch.all(first.feed == 0) and first.feed.shape == (len(SRC_LENGTHS), TINY.embedding_size)
    state = model.decode_step(tgt_in_ids[:, 0], first, enc).state
    assert not torch.allclose(state.feed, torch.zeros_like(state.feed))
    forgotten = dataclasses.replace(state, feed=torch.zeros_like(state.feed))
    assert not torch.allclose(model.decode_step(tgt_in_ids[:, 1], state, enc).log_probs,
                              model.decode_step(tgt_in_ids[:, 1], forgotten, enc).log_probs)


@pytest.mark.parametrize("overrides", [PARAMS[1], PARAMS[3], PARAMS[8]])
@torch.no_grad()
def test_index_select_reorders_and_expands_hypotheses(overrides: dict) -> None:
    model = build(overrides)
    src_ids, src_lengths, tgt_in_ids = batch()
    enc = model.encode(src_ids, src_lengths)
    state = model.decode_step(tgt_in_ids[:, 0], model.init_state(enc), enc).state
    expected = model.decode_step(tgt_in_ids[:, 1], state, enc).log_probs
    beams = torch.arange(len(SRC_LENGTHS)).repeat_interleave(3)  # K = 3 beams per sentence
    expanded = model.decode_step(tgt_in_ids[beams, 1], state.index_select(beams), enc.index_select(beams))
    torch.testing.assert_close(expanded.log_probs, expected[beams], rtol=0, atol=1e-6)
    order = torch.tensor([2, 0, 3, 1])
    reordered = model.decode_step(tgt_in_ids[order, 1], state.index_select(order), enc.index_select(order))
    torch.testing.assert_close(reordered.log_probs, expected[order], rtol=0, atol=1e-6)


@pytest.mark.parametrize("overrides,gru_calls", [
    (VARIANTS["none-context_every_step"], 1), (VARIANTS["luong_general"], 1), (VARIANTS["luong_dot"], 1),
    (VARIANTS["bahdanau"], TGT_LENGTH),  # a hook on nn.GRU makes the fused decoder call it per step
    (VARIANTS["luong_general-input_feeding"], TGT_LENGTH)])
def test_only_stepwise_decoders_loop_and_the_vocabulary_projection_runs_once(overrides: dict, gru_calls: int) -> None:
    model = build(overrides)
    calls = {"gru": 0, "output": 0}
    model.decoder.gru.register_forward_hook(lambda *_: calls.__setitem__("gru", calls["gru"] + 1))
    model.decoder.output.register_forward_hook(lambda *_: calls.__setitem__("output", calls["output"] + 1))
    model(*batch())
    assert calls == {"gru": gru_calls, "output": 1}


@pytest.mark.parametrize("overrides", [PARAMS[2], PARAMS[5], PARAMS[9]])
def test_every_parameter_gets_a_gradient(overrides: dict) -> None:
    model = build(overrides).train()
    logits = model(*batch())
    logits.logsumexp(-1).mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.parametrize("overrides", [PARAMS[3], PARAMS[9]])  # the fused Bahdanau loop and the parallel path
def test_word_dropout_drops_whole_tokens_in_training_and_nothing_in_eval(overrides: dict) -> None:
    plain, dropped = build(overrides), build({**overrides, "word_dropout": 0.5})
    assert torch.equal(plain(*batch()), dropped(*batch()))  # eval: the same weights give the same logits
    seen = {}
    for name, module in (("src", dropped.encoder.embedding_dropout), ("tgt", dropped.decoder.embedding_dropout)):
        module.register_forward_hook(lambda _m, _i, out, name=name: seen.__setitem__(name, out))
    torch.manual_seed(0)
    src_ids, _, tgt_in_ids = batch()
    dropped.train()(*batch())
    for name, ids in (("src", src_ids), ("tgt", tgt_in_ids)):
        zero_tokens = (seen[name] == 0).all(-1)[ids != 0]  # real tokens only: padding embeds to zeros anyway
        assert 0.1 < zero_tokens.float().mean() < 0.9, name  # about half of the tokens dropped whole
    torch.manual_seed(0)
    assert not torch.equal(plain.train()(*batch()), dropped(*batch()))


def test_tied_and_shared_embeddings_are_one_matrix() -> None:
    model = build(VARIANTS["bahdanau-tied-shared"])
    assert model.decoder.output.weight is model.decoder.embedding.weight
    assert model.encoder.embedding is model.decoder.embedding
    untied = build(VARIANTS["bahdanau"])
    assert untied.decoder.output.weight is not untied.decoder.embedding.weight
    assert untied.encoder.embedding is not untied.decoder.embedding
    assert model.num_parameters() == untied.num_parameters() - 2 * VOCAB * TINY.embedding_size


@pytest.mark.parametrize("overrides", [PARAMS[1], PARAMS[3], PARAMS[8]])
def test_runs_under_cpu_bf16_autocast(overrides: dict) -> None:
    model = build(overrides).train()
    src_ids, src_lengths, tgt_in_ids = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(src_ids, src_lengths, tgt_in_ids)
        enc = model.encode(src_ids, src_lengths)
        step = model.decode_step(tgt_in_ids[:, 0], model.init_state(enc), enc)
    logits.float().mean().backward()
    assert torch.isfinite(logits.float()).all()
    assert step.log_probs.dtype == torch.float32
    if step.attention is not None:
        assert step.attention.dtype == torch.float32
        torch.testing.assert_close(step.attention.sum(-1), torch.ones(len(SRC_LENGTHS)), rtol=0, atol=1e-6)


@torch.no_grad()
def test_empty_source_is_read_as_one_pad_token() -> None:
    model = build(VARIANTS["bahdanau"])
    src_ids, src_lengths, tgt_in_ids = batch([3, 0])
    step = model.decode_step(tgt_in_ids[:, 0], model.init_state(model.encode(src_ids, src_lengths)),
                             model.encode(src_ids, src_lengths))
    assert torch.isfinite(step.log_probs).all()
    assert step.attention[1].tolist() == [1.0, 0.0, 0.0]


@pytest.mark.parametrize("overrides,keys", [
    (dict(bridge="none", decoder_hidden_size=7), ["model.bridge", "model.decoder_hidden_size", "model.hidden_size"]),
    (dict(bridge="none", bidirectional=False, decoder_hidden_size=10), ["model.decoder_hidden_size=5"]),
    (dict(attention="luong_dot", decoder_hidden_size=7), ["model.attention=luong_dot", "model.decoder_hidden_size"]),
    (dict(attention="bahdanau", input_feeding=True), ["model.input_feeding", "model.attention"]),
    (dict(attention="luong_general", context_every_step=True), ["model.context_every_step", "model.attention"]),
])
def test_configs_that_cannot_fit_are_rejected_naming_the_keys(overrides: dict, keys: list[str]) -> None:
    with pytest.raises(ConfigError) as raised:
        build(overrides)
    for key in keys:
        assert key in str(raised.value)


def test_shared_embeddings_need_one_vocabulary() -> None:
    cfg = dataclasses.replace(TINY, share_embeddings=True)
    with pytest.raises(ConfigError, match="model.share_embeddings.*tokenizer.joint"):
        Seq2Seq.from_config(cfg, VOCAB, VOCAB + 1)


def test_from_config_logs_the_parameter_count(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="seq2seq.model.seq2seq"):
        model = build({})
    assert f"{model.num_parameters():,} parameters" in caplog.text


@torch.no_grad()
def test_reference_config_builds_and_runs() -> None:
    cfg = load_config(Path(__file__).parents[1] / "configs" / "multi30k_de_en.yaml").model
    model = Seq2Seq.from_config(cfg, 8000, 8000).eval()
    assert model.attention_type == "bahdanau"
    assert model.decoder.gru.hidden_size == 512 and model.decoder.gru.num_layers == 2
    src_ids, src_lengths, tgt_in_ids = batch([3, 2])
    assert model(src_ids, src_lengths, tgt_in_ids).shape == (2, TGT_LENGTH, 8000)


def test_tied_output_projection_starts_near_the_uniform_loss():
    # A tied embedding initialised like nn.Embedding (unit variance) makes the first logits
    # huge and the initial loss far above log V; the package scales it to N(0, 1/E).
    torch.manual_seed(0)
    vocab = 500
    model = Seq2Seq(src_vocab_size=vocab, tgt_vocab_size=vocab, embedding_size=64, hidden_size=32, num_layers=1,
                    bidirectional=True, decoder_hidden_size=64, bridge="linear", attention="bahdanau",
                    input_feeding=False, context_every_step=False, dropout=0.0, tied_embeddings=True,
                    share_embeddings=True).eval()
    src_ids, tgt_ids = torch.randint(4, vocab, (8, 12)), torch.randint(4, vocab, (8, 10))
    logits = model(src_ids, torch.full((8,), 12), tgt_ids)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), tgt_ids.reshape(-1))
    assert abs(loss.item() - math.log(vocab)) < 0.5
    assert model.decoder.embedding.weight[0].abs().sum() == 0  # the pad row stays zero
