"""The ``seq2seq inspect`` command: reports as text or JSON lines, and the attention and update-gate PNGs."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from ..checkpoint import load_model
from ..device import resolve_device
from ..errors import Seq2SeqError
from ..plots import plot_attention, plot_update_gate_means, plot_update_gates, require_matplotlib
from ..textio import read_lines
from .checks import TOLERANCE, Check
from .report import TOP_SOURCE_PIECES, GatePanel, GateSummary, SentenceInspection, SentenceReport, inspect_sentence

logger = logging.getLogger(__name__)


def inspect_command(*, checkpoint: str, sentences: list[str], input_path: str | None, as_json: bool,
                    plot_dir: str | None, device: str) -> None:
    """``seq2seq inspect``: print a report (text, or one JSON object per line) for each sentence; optionally PNGs."""
    items = _collect_sentences(sentences, input_path)
    if plot_dir:
        require_matplotlib()
    loaded = load_model(checkpoint, resolve_device(device))
    for number, (source, sentence) in enumerate(items, start=1):
        inspection = inspect_sentence(loaded, sentence, source=source)
        _print_report(inspection.report, as_json, sys.stdout)
        if plot_dir:
            for path in write_plots(inspection, Path(plot_dir), number):
                logger.info("wrote %s", path)


def _collect_sentences(sentences: list[str], input_path: str | None) -> list[tuple[str, str]]:
    """(where from, text) for the command-line sentences, then the non-blank lines of ``input_path``.

    Blank lines in the file separate paragraphs rather than being sentences: they are skipped
    (the report still names each sentence's own line number).
    """
    items = [(f"argument {i}", text) for i, text in enumerate(sentences, start=1)]
    if input_path is not None:
        lines = read_lines(input_path)
        items += [(f"{input_path}, line {i}", text) for i, text in enumerate(lines, start=1) if text.strip()]
        blank = sum(1 for text in lines if not text.strip())
        if blank:
            logger.info("%s: skipped %d blank line(s)", input_path, blank)
    if not items:
        raise Seq2SeqError("no sentence to inspect: give one as an argument (seq2seq inspect -c CKPT \"ein Satz .\") "
                           "or a file of sentences with -i FILE")
    return items


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
    convention = "update gate z (PyTorch's GRU): z near 1 keeps the old state, z near 0 rewrites it"
    labelled = [(panel.label, panel.update) for panel in panels]
    return [plot_update_gates(labelled, pieces, f"{stem}.png", title=f"{title}\n{convention}", xlabel=xlabel),
            plot_update_gate_means(labelled, pieces, f"{stem}-mean.png", title=f"{title}\n{convention}",
                                   xlabel=xlabel)]


def _printable(text: str) -> str:
    """``text`` with control characters (which an untrained model may well produce) shown as U+FFFD."""
    return "".join(char if char.isprintable() else "\ufffd" for char in text)
