"""What ``seq2seq inspect`` computes: the context vector, attention and GRU gates of a model on one sentence.

For each sentence the report holds what ``nn.GRU`` returned in the encoder (the shapes
of ``output`` and ``h_n`` and the ``h_n.view(L, D, B, H)`` reading), checks the facts of
GRU_FACTS.md on this model (:mod:`.checks`) and input with their maximum absolute differences, shows the
decoder's starting state per layer, the greedy translation with the source pieces each
output token attends to most, and where the update gate z rewrites the state. The gates
come from :mod:`.gates`, replaying exactly what the encoder and decoder fed their
``nn.GRU`` during the greedy translation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from ..checkpoint import LoadedModel
from ..config import DecodeConfig
from ..errors import DataError
from ..ids import BOS_ID, EOS_ID
from ..model import Seq2Seq
from ..search import Hypothesis, greedy_search
from .checks import Check, check, encoder_checks, join_checks, max_abs_diff, padding_checks
from .gates import GRUTrace, record_calls, replay_calls, replay_difference, transparent_gru

logger = logging.getLogger(__name__)

TOP_SOURCE_PIECES = 3  # source pieces listed per output token, by attention weight
LOWEST_GATE_TOKENS = 3  # tokens named per layer where the mean update gate is lowest
DIRECTIONS = ("forward", "backward")


@dataclass(frozen=True)
class StateRow:
    """Row ``h_n[index]`` = ``h_n.view(L, D, B, H)[layer, direction]``; ``in_output``: where ``output`` holds it."""

    index: int
    layer: int
    direction: str
    norm: float
    in_output: str | None


@dataclass(frozen=True)
class LayerStart:
    """Where decoder layer ``layer`` starts: the joined h_n of that encoder layer (D*H) and, after the bridge, Hd."""

    layer: int
    joined_norm: float
    initial_norm: float


@dataclass(frozen=True)
class Weighted:
    """A token at ``position`` with a value: an attention weight, or a mean update gate."""

    piece: str
    position: int
    value: float


@dataclass(frozen=True)
class TargetToken:
    """One output token (EOS included) and the source pieces it attends to most, heaviest first."""

    piece: str
    attends_to: list[Weighted]


@dataclass(frozen=True)
class GateSummary:
    """The update gate of one GRU layer and direction over its tokens: the mean over units per token, and the lowest."""

    side: str  # encoder | decoder
    layer: int
    direction: str
    tokens: list[str]
    mean_update: list[float]
    lowest: list[Weighted]


@dataclass(frozen=True)
class SentenceReport:
    """Everything ``inspect`` prints for one sentence; :func:`report_to_dict` is its JSON form."""

    source: str  # where the sentence came from, e.g. "argument 1" or "input.txt, line 3"
    sentence: str
    src_pieces: list[str]
    num_layers: int
    num_directions: int
    hidden_size: int
    output_shape: list[int]
    h_n_shape: list[int]
    states: list[StateRow]
    checks: list[Check]
    bridge: str
    decoder_start: list[LayerStart]
    translation: str
    target: list[TargetToken]
    gates: list[GateSummary]


@dataclass(frozen=True)
class GatePanel:
    """The update gate z (N, H) of one layer and direction over its N tokens."""

    layer: int
    direction: str
    update: Tensor

    @property
    def label(self) -> str:
        return f"layer {self.layer} {self.direction}"


@dataclass
class SentenceInspection:
    """A report and the tensors its plots need: attention (T, S) or None, the update-gate panels of each side."""

    report: SentenceReport
    tgt_pieces: list[str]
    attention: Tensor | None
    encoder_gates: list[GatePanel]
    decoder_gates: list[GatePanel]
    decoder_tokens: list[str]  # the token each decoder step reads: BOS, then the output without EOS


@dataclass
class _TracedTranslation:
    """A greedy translation with the gates of both GRUs, replayed from what they were fed during it."""

    hypothesis: Hypothesis
    encoder: GRUTrace
    decoder: GRUTrace
    decoder_replay_diff: float  # max |replayed - recorded| decoder state over all steps and layers


@torch.inference_mode()
def inspect_sentence(loaded: LoadedModel, sentence: str, source: str = "argument 1") -> SentenceInspection:
    """Encode, check, translate greedily and trace the gates of one sentence."""
    model, tokenizer = loaded.model, loaded.tokenizer
    src_ids = _source_ids(loaded, sentence, source)
    src_pieces = tokenizer.src_pieces(sentence)[:len(src_ids)]
    device = next(model.parameters()).device
    src = torch.tensor([src_ids], dtype=torch.long, device=device)
    lengths = torch.tensor([len(src_ids)], dtype=torch.long)
    traced = _translate_traced(model, src, lengths, loaded.config.decode)
    hypothesis = traced.hypothesis
    # Teacher-forcing the greedy output gives the joined and bridged states the translation started from.
    seen = model.introspect(src, lengths, torch.tensor([[BOS_ID, *hypothesis.tgt_ids]], device=device))
    tgt_pieces = tokenizer.tgt_pieces([*hypothesis.tgt_ids, EOS_ID])
    decoder_tokens = tokenizer.tgt_pieces([BOS_ID, *hypothesis.tgt_ids])  # the token each decoder step reads
    encoder_gates, decoder_gates = _gate_panels(traced)
    attention = None if hypothesis.attention is None else hypothesis.attention.float()
    layers, directions = model.num_layers, 2 if model.bidirectional else 1
    report = SentenceReport(
        source=source, sentence=sentence, src_pieces=src_pieces, num_layers=layers, num_directions=directions,
        hidden_size=model.encoder.hidden_size, output_shape=list(seen.output.shape), h_n_shape=list(seen.h_n.shape),
        states=_state_rows(seen.h_n, layers, directions, len(src_ids)),
        checks=[*encoder_checks(seen.output, seen.h_n, layers, directions),
                *padding_checks(model, src_ids, seen.h_n, device),
                *join_checks(seen.joined, seen.h_n, layers, directions),
                *_transparent_checks(traced, seen.h_n)],
        bridge=loaded.config.model.bridge,
        decoder_start=[LayerStart(layer=k, joined_norm=_norm(seen.joined[k]), initial_norm=_norm(seen.initial[k]))
                       for k in range(layers)],
        translation=tokenizer.decode_tgt(hypothesis.tgt_ids), target=_target_tokens(tgt_pieces, src_pieces, attention),
        gates=[*_gate_summaries("encoder", encoder_gates, src_pieces),
               *_gate_summaries("decoder", decoder_gates, decoder_tokens)])
    return SentenceInspection(report=report, tgt_pieces=tgt_pieces, attention=attention, encoder_gates=encoder_gates,
                              decoder_gates=decoder_gates, decoder_tokens=decoder_tokens)


def _translate_traced(model: Seq2Seq, src: Tensor, lengths: Tensor, options: DecodeConfig) -> _TracedTranslation:
    """Greedy search on src (1, S), recording the calls to the encoder's and decoder's nn.GRU, then replaying them.

    The recorded inputs are what the model itself computed (embeddings, attention context,
    input feeding), so the decoder's gates are those of the steps that produced this translation.
    """
    with record_calls(model.encoder.gru) as encoder_calls, record_calls(model.decoder.gru) as decoder_calls:
        hypothesis = greedy_search(model, src, lengths, options, return_attention=True)[0]
    [encoder_call] = encoder_calls
    decoder = replay_calls(model.decoder.gru, decoder_calls)
    return _TracedTranslation(hypothesis=hypothesis,
                              encoder=transparent_gru(model.encoder.gru, encoder_call.inputs, encoder_call.hx),
                              decoder=decoder,
                              decoder_replay_diff=replay_difference(model.decoder.gru, decoder, decoder_calls))


def _gate_panels(traced: _TracedTranslation) -> tuple[list[GatePanel], list[GatePanel]]:
    """The update gate of every encoder layer and direction (S, H), and of every decoder layer (T, H)."""
    encoder = [GatePanel(layer=k, direction=DIRECTIONS[d], update=trace.update[0])
               for k, layer in enumerate(traced.encoder.layers) for d, trace in enumerate(layer)]
    decoder = [GatePanel(layer=k, direction="forward", update=layer[0].update[0])
               for k, layer in enumerate(traced.decoder.layers)]
    return encoder, decoder


def _transparent_checks(traced: _TracedTranslation, h_n: Tensor) -> list[Check]:
    """The gates are trustworthy only if the transparent GRU reproduces what nn.GRU returned."""
    return [check("transparent_encoder", "transparent GRU h_n == encoder h_n", True, max_abs_diff(traced.encoder.h_n, h_n)),
            check("transparent_decoder", "transparent GRU == decoder GRU state at every greedy step", True,
                   traced.decoder_replay_diff)]


def _source_ids(loaded: LoadedModel, sentence: str, source: str) -> list[int]:
    """The ids the encoder reads, cut to ``data.max_length`` as ``translate`` does; an empty sentence is refused."""
    src_ids = loaded.tokenizer.encode_src(sentence)
    if not src_ids:
        raise DataError(f"{source}: the sentence is empty (no source pieces); give a non-empty sentence")
    max_length = loaded.config.data.max_length
    if len(src_ids) > max_length:
        logger.warning("%s: %d subword tokens, more than the model's data.max_length=%d; inspecting the first %d",
                       source, len(src_ids), max_length, max_length)
    return src_ids[:max_length]


def _state_rows(h_n: Tensor, num_layers: int, directions: int, length: int) -> list[StateRow]:
    """The ``h_n.view(L, D, B, H)`` reading: which row is which layer and direction, and where ``output`` has it."""
    hidden = h_n.size(-1)
    top_in_output = {0: f"output[0, {length - 1}, :{hidden}] (last token)",
                     1: f"output[0, 0, {hidden}:] (first token)"}
    rows = []
    for layer in range(num_layers):
        for direction in range(directions):
            index = layer * directions + direction
            rows.append(StateRow(index=index, layer=layer, direction=DIRECTIONS[direction], norm=_norm(h_n[index]),
                                 in_output=top_in_output[direction] if layer == num_layers - 1 else None))
    return rows


def _target_tokens(tgt_pieces: list[str], src_pieces: list[str], attention: Tensor | None) -> list[TargetToken]:
    """Each output piece with the source pieces of highest attention weight; attention (T, S) or None."""
    tokens = []
    for t, piece in enumerate(tgt_pieces):
        attends_to: list[Weighted] = []
        if attention is not None:
            weights, positions = attention[t].topk(min(TOP_SOURCE_PIECES, attention.size(1)))
            attends_to = [Weighted(piece=src_pieces[p], position=p, value=w)
                          for w, p in zip(weights.tolist(), positions.tolist())]
        tokens.append(TargetToken(piece=piece, attends_to=attends_to))
    return tokens


def _gate_summaries(side: str, panels: list[GatePanel], tokens: list[str]) -> list[GateSummary]:
    """Per panel, z (N, H) averaged over units per token, and the tokens where it is lowest (state most rewritten)."""
    summaries = []
    for panel in panels:
        mean = panel.update.float().mean(dim=-1)  # (N,)
        values, positions = mean.topk(min(LOWEST_GATE_TOKENS, mean.numel()), largest=False)
        lowest = [Weighted(piece=tokens[p], position=p, value=v) for v, p in zip(values.tolist(), positions.tolist())]
        summaries.append(GateSummary(side=side, layer=panel.layer, direction=panel.direction, tokens=tokens,
                                     mean_update=mean.tolist(), lowest=lowest))
    return summaries


def _norm(x: Tensor) -> float:
    return x.float().norm().item()


