"""``seq2seq inspect``: the context vector, attention and GRU gates of a trained model, on the user's sentence.

For each sentence the command shows what ``nn.GRU`` returned in the encoder (the shapes
of ``output`` and ``h_n`` and the ``h_n.view(L, D, B, H)`` reading), checks the facts of
docs/GRU.md on this model and input with their maximum absolute differences, shows the
decoder's starting state per layer, the greedy translation with the source pieces each
output token attends to most, and where the update gate z rewrites the state. The gates
come from :mod:`seq2seq.gates`, replaying exactly what the encoder and decoder fed their
``nn.GRU`` during the greedy translation.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import Tensor

from .checkpoint import LoadedModel, load_model
from .config import DecodeConfig
from .device import resolve_device
from .errors import DataError, Seq2SeqError
from .gates import GRUTrace, record_calls, replay_calls, replay_difference, transparent_gru
from .search import Hypothesis, greedy_search
from .textio import read_lines
from .tokenizer import BOS_ID, EOS_ID

logger = logging.getLogger(__name__)

TOLERANCE = 1e-5  # "equal" in a check means a maximum absolute difference at most this (float32 rounding)
TOP_SOURCE_PIECES = 3  # source pieces listed per output token, by attention weight
LOWEST_GATE_TOKENS = 3  # tokens named per layer where the mean update gate is lowest
DIRECTIONS = ("forward", "backward")


@dataclass(frozen=True)
class Check:
    """A fact of docs/GRU.md tested on this model: ``expect_equal`` says whether the two sides should agree."""

    name: str
    claim: str
    expect_equal: bool
    max_abs_diff: float

    @property
    def holds(self) -> bool:
        return (self.max_abs_diff <= TOLERANCE) == self.expect_equal


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


def inspect_command(*, checkpoint: str, sentences: list[str], input_path: str | None, as_json: bool,
                    plot_dir: str | None, device: str) -> None:
    """``seq2seq inspect``: print a report (text, or one JSON object per line) for each sentence; optionally PNGs."""
    items = _collect_sentences(sentences, input_path)
    if plot_dir:
        from .plots import require_matplotlib

        require_matplotlib()
    loaded = load_model(checkpoint, resolve_device(device))
    for number, (source, sentence) in enumerate(items, start=1):
        inspection = inspect_sentence(loaded, sentence, source=source)
        _print_report(inspection.report, as_json, sys.stdout)
        if plot_dir:
            for path in write_plots(inspection, Path(plot_dir), number):
                logger.info("wrote %s", path)


def _collect_sentences(sentences: list[str], input_path: str | None) -> list[tuple[str, str]]:
    """(where from, text) for the command-line sentences, then the lines of ``input_path``."""
    items = [(f"argument {i}", text) for i, text in enumerate(sentences, start=1)]
    if input_path is not None:
        items += [(f"{input_path}, line {i}", text) for i, text in enumerate(read_lines(input_path), start=1)]
    if not items:
        raise Seq2SeqError("no sentence to inspect: give one as an argument (seq2seq inspect -c CKPT \"ein Satz .\") "
                           "or a file of sentences with -i FILE")
    return items


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
        checks=[*_encoder_checks(seen.output, seen.h_n, layers, directions),
                *_padding_checks(model, src_ids, seen.h_n, device),
                *_join_checks(seen.joined, seen.h_n, layers, directions),
                *_transparent_checks(traced, seen.h_n)],
        bridge=loaded.config.model.bridge,
        decoder_start=[LayerStart(layer=k, joined_norm=_norm(seen.joined[k]), initial_norm=_norm(seen.initial[k]))
                       for k in range(layers)],
        translation=tokenizer.decode_tgt(hypothesis.tgt_ids), target=_target_tokens(tgt_pieces, src_pieces, attention),
        gates=[*_gate_summaries("encoder", encoder_gates, src_pieces),
               *_gate_summaries("decoder", decoder_gates, decoder_tokens)])
    return SentenceInspection(report=report, tgt_pieces=tgt_pieces, attention=attention, encoder_gates=encoder_gates,
                              decoder_gates=decoder_gates, decoder_tokens=decoder_tokens)


def _translate_traced(model: Any, src: Tensor, lengths: Tensor, options: DecodeConfig) -> _TracedTranslation:
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
    return [_check("transparent_encoder", "transparent GRU h_n == encoder h_n", True, _diff(traced.encoder.h_n, h_n)),
            _check("transparent_decoder", "transparent GRU == decoder GRU state at every greedy step", True,
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


def _encoder_checks(output: Tensor, h_n: Tensor, num_layers: int, directions: int) -> list[Check]:
    """Where the top layer's final states sit in ``output`` (1, S, D*H), for the sentence alone."""
    hidden = h_n.size(-1)
    top = h_n.view(num_layers, directions, 1, hidden)[-1]  # (D, 1, H)
    last = output.size(1) - 1
    checks = [_check("forward_final_is_output_last", "top forward final state == output[0, S-1, :H]", True,
                     _diff(top[0], output[:, last, :hidden]))]
    if directions == 1:
        checks.append(_check("h_n_last_is_output_last", "h_n[-1] == output[0, -1] (unidirectional, unpadded)", True,
                             _diff(h_n[-1], output[:, -1])))
        return checks
    checks.append(_check("backward_final_is_output_first", "top backward final state == output[0, 0, H:]", True,
                         _diff(top[1], output[:, 0, hidden:])))
    if last > 0:  # with one token the first position is also the last
        checks.append(_check("backward_final_is_not_output_last",
                             "top backward final state != output[0, S-1, H:] (it ends at the first token)", False,
                             _diff(top[1], output[:, last, hidden:])))
    return checks


def _padding_checks(model: Any, src_ids: list[int], h_n_alone: Tensor, device: torch.device) -> list[Check]:
    """Encode the sentence padded inside a batch beside one twice as long: what ``output[:, -1]`` then holds."""
    length = len(src_ids)
    batch = torch.zeros(2, 2 * length, dtype=torch.long, device=device)  # PAD_ID is 0
    batch[0, :length] = torch.tensor(src_ids, device=device)
    batch[1] = torch.tensor(src_ids + src_ids, device=device)
    enc = model.encode(batch, torch.tensor([length, 2 * length]))
    directions = 2 if model.bidirectional else 1
    hidden = enc.h_n.size(-1)
    forward_final = enc.h_n.view(model.num_layers, directions, 2, hidden)[-1, 0, 0]  # (H,)
    return [
        _check("padded_output_last_is_not_h_n",
               f"padded to {2 * length}: output[0, -1, :H] != top forward final state (padding holds zeros)", False,
               _diff(enc.output[0, -1, :hidden], forward_final)),
        _check("padded_output_true_last_is_h_n", "padded: output[0, S-1, :H] at the true last token == that state",
               True, _diff(enc.output[0, length - 1, :hidden], forward_final)),
        _check("padded_h_n_equals_alone", "padded: h_n of the sentence in the batch == h_n of it alone (all layers)",
               True, _diff(enc.h_n[:, 0], h_n_alone[:, 0])),
    ]


def _join_checks(joined: Tensor, h_n: Tensor, num_layers: int, directions: int) -> list[Check]:
    """The decoder starts from h_n joined per layer: cat(view[:, 0], view[:, 1]) (L, B, D*H)."""
    per_layer = h_n.view(num_layers, directions, h_n.size(1), h_n.size(-1))
    expected = torch.cat([per_layer[:, d] for d in range(directions)], dim=-1)
    claim = ("joined == cat(h_n.view(L, 2, B, H)[:, 0], [:, 1], dim=-1)" if directions == 2
             else "joined == h_n.view(L, 1, B, H)[:, 0]")
    return [_check("joined_is_h_n_per_layer", claim, True, _diff(joined, expected))]


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


def _check(name: str, claim: str, expect_equal: bool, max_abs_diff: float) -> Check:
    return Check(name=name, claim=claim, expect_equal=expect_equal, max_abs_diff=max_abs_diff)


def _diff(a: Tensor, b: Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def _norm(x: Tensor) -> float:
    return x.float().norm().item()


def report_to_dict(report: SentenceReport) -> dict[str, Any]:
    """The JSON form of a report: plain fields, with the checks keyed by name and each one's verdict."""
    data = asdict(report)
    data["tolerance"] = TOLERANCE
    data["checks"] = {check.name: {"claim": check.claim, "expect": "equal" if check.expect_equal else "differ",
                                   "max_abs_diff": check.max_abs_diff, "holds": check.holds}
                      for check in report.checks}
    return data


def format_report(report: SentenceReport) -> str:
    """The text form of a report, one section per question it answers."""
    sections = [_format_header(report), _format_encoder(report), _format_checks(report.checks),
                _format_decoder_start(report), _format_translation(report), _format_gates(report.gates)]
    return "\n\n".join(sections) + "\n"


def _print_report(report: SentenceReport, as_json: bool, out: TextIO) -> None:
    if as_json:
        out.write(json.dumps(report_to_dict(report), ensure_ascii=False) + "\n")
    else:
        out.write(format_report(report) + "\n")
    out.flush()


def _format_header(report: SentenceReport) -> str:
    return (f"=== {report.source}: {report.sentence}\n"
            f"source pieces (S={len(report.src_pieces)}): {' '.join(report.src_pieces)}")


def _format_encoder(report: SentenceReport) -> str:
    layers, directions, hidden = report.num_layers, report.num_directions, report.hidden_size
    lines = [f"encoder: L={layers} layer(s), D={directions} direction(s), H={hidden}",
             f"  output {tuple(report.output_shape)} = (B, S, D*H): the top layer only, at every source position",
             f"  h_n    {tuple(report.h_n_shape)} = (L*D, B, H): every layer, at the last step only",
             f"  h_n.view({layers}, {directions}, 1, {hidden}), layer-major, direction second:"]
    for row in report.states:
        where = f"= {row.in_output}" if row.in_output else "(a lower layer: not in output)"
        lines.append(f"    h_n[{row.index}] = layer {row.layer} {row.direction:<8}  |h| = {row.norm:7.3f}  {where}")
    if directions == 2:
        lines.append(f"  so h_n[-1] is the top layer's backward state, and output[:, :, :{hidden}] is forward, "
                     f"output[:, :, {hidden}:] backward")
    return "\n".join(lines)


def _format_checks(checks: list[Check]) -> str:
    lines = [f"checks (max |difference|; equal means at most {TOLERANCE:g}):"]
    for check in checks:
        verdict = "ok  " if check.holds else "FAIL"
        lines.append(f"  [{verdict}] {check.claim:<86} {check.max_abs_diff:.3g}")
    return "\n".join(lines)


def _format_decoder_start(report: SentenceReport) -> str:
    width = report.num_directions * report.hidden_size
    lines = [f"decoder start (bridge: {report.bridge}): layer k starts from encoder layer k"]
    for start in report.decoder_start:
        lines.append(f"  layer {start.layer}: joined h_n ({width}) |h| = {start.joined_norm:7.3f}"
                     f"  -> initial state |h| = {start.initial_norm:7.3f}")
    return "\n".join(lines)


def _format_translation(report: SentenceReport) -> str:
    lines = [f"translation (greedy): {_printable(report.translation)}"]
    if not any(token.attends_to for token in report.target):
        return "\n".join([*lines, f"  pieces: {' '.join(token.piece for token in report.target)} "
                                   "(the model has no attention)"])
    lines.append(f"  output piece   <- the {TOP_SOURCE_PIECES} source pieces it attends to most")
    for token in report.target:
        attended = ", ".join(f"{w.piece} {w.value:.2f}" for w in token.attends_to)
        lines.append(f"  {token.piece:<14} <- {attended}")
    return "\n".join(lines)


def _format_gates(gates: list[GateSummary]) -> str:
    lines = ["update gate z (PyTorch: near 1 keeps the old state); tokens where its mean is lowest, "
             "i.e. the state is most rewritten:"]
    for summary in gates:
        lowest = ", ".join(f"{w.piece} {w.value:.2f}" for w in summary.lowest)
        lines.append(f"  {summary.side} layer {summary.layer} {summary.direction:<8}: {lowest}")
    return "\n".join(lines)


def write_plots(inspection: SentenceInspection, directory: Path, number: int) -> list[Path]:
    """PNGs for sentence ``number``: the attention heatmap (if the model attends), then per side (encoder, decoder)
    the update gate per unit and token, and its mean over units per token."""
    from .plots import plot_attention

    report = inspection.report
    stem = directory / f"sentence-{number:03d}"
    paths = []
    if inspection.attention is not None:
        paths.append(plot_attention(inspection.attention, report.src_pieces, inspection.tgt_pieces,
                                    f"{stem}-attention.png", title=f"attention: {_printable(report.sentence)}"))
    paths += _plot_side(inspection.encoder_gates, report.src_pieces, f"{stem}-update-encoder",
                        f"encoder: {_printable(report.sentence)}", "source piece")
    paths += _plot_side(inspection.decoder_gates, inspection.decoder_tokens, f"{stem}-update-decoder",
                        f"decoder: {_printable(report.translation)}",
                        "target piece read at each step (<s>, then the output)")
    return paths


def _plot_side(panels: list[GatePanel], pieces: list[str], stem: str, title: str, xlabel: str) -> list[Path]:
    """The per-unit heatmap and the per-token mean of one side's update gates; both titles state the convention."""
    from .plots import plot_update_gate_means, plot_update_gates

    convention = "update gate z (PyTorch's GRU): z near 1 keeps the old state, z near 0 rewrites it"
    labelled = [(panel.label, panel.update) for panel in panels]
    return [plot_update_gates(labelled, pieces, f"{stem}.png", title=f"{title}\n{convention}", xlabel=xlabel),
            plot_update_gate_means(labelled, pieces, f"{stem}-mean.png", title=f"{title}\n{convention}",
                                   xlabel=xlabel)]


def _printable(text: str) -> str:
    """``text`` with control characters (which an untrained model may well produce) shown as U+FFFD."""
    return "".join(char if char.isprintable() else "\ufffd" for char in text)
