"""The figures of scripts/benchmark.py: the flat JSON dict, the printed table, FLOP shares and the targets."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import torch

from benchmarking import BatchSize, DecodeThroughput, MachineInfo, Throughput
from seq2seq.device import resolve_amp

# Shares of the same-run fp32 matmul peak, comparable across CPUs: training (fp32), greedy and beam 5;
# and the package's time per token over the floor's.
SHARE_TARGETS = {"train_share_of_peak": 0.60, "package_over_floor": 0.70, "greedy_share_of_peak": 0.55,
                 "beam5_share_of_peak": 0.55}
PEAK = "matmul peak"
NO_BF16_UNITS = "skipped: this CPU has no bf16 matrix units (AMX), so bf16 is emulated and many times slower"


@dataclasses.dataclass
class TrainFigure:
    """One training phase: which model, precision, its parameter count and its throughput (None = not run)."""

    name: str
    precision: str
    parameters: int
    throughput: Throughput | None
    note: str = ""
    peak_memory_mib: float = float("nan")  # read during the phase's warm-up
    flops_per_tgt_token: float = float("nan")  # of a training step, by hand (flops.py)

    @property
    def label(self) -> str:
        return f"{self.name} {self.precision}"



def figures_dict(machine: MachineInfo, args: argparse.Namespace, batch_size: BatchSize, train_tokens: int,
                 training: list[TrainFigure], weights: str, decoding: dict[str, DecodeThroughput],
                 decode_precision: dict[str, str]) -> dict[str, Any]:
    """Every figure under a flat key; the issue's keys come first.

    ``greedy_sents_per_s`` and ``beam5_sents_per_s`` are in the precision ``seq2seq translate``
    uses by default here (``decode.amp: auto``); the ``_fp32`` and ``_bf16`` keys hold both.
    """
    def decode_rate(key: str, precision: str) -> float | None:
        result = decoding.get({"fp32": key, "bf16": f"{key}_bf16"}.get(precision, ""))
        return None if result is None else result.sents_per_s

    by_name = {(f.name, f.precision): f for f in training}

    def rate(name: str, precision: str) -> float | None:
        figure = by_name.get((name, precision))
        return None if figure is None or figure.throughput is None else figure.throughput.median

    package, floor = rate("package", "fp32"), rate("floor", "fp32")
    out: dict[str, Any] = {
        "train_tokens_per_s": package, "train_tokens_per_s_bf16": rate("package", "bf16"),
        "floor_tokens_per_s": floor, "floor_tokens_per_s_bf16": rate("floor", "bf16"),
        "luong_tokens_per_s": rate("package luong", "fp32"), "luong_tokens_per_s_bf16": rate("package luong", "bf16"),
        "greedy_sents_per_s": decode_rate("greedy", decode_precision["greedy"]),
        "beam5_sents_per_s": decode_rate("beam5", decode_precision["beam5"]),
        "greedy_sents_per_s_fp32": decode_rate("greedy", "fp32"), "beam5_sents_per_s_fp32": decode_rate("beam5", "fp32"),
        "greedy_sents_per_s_bf16": decode_rate("greedy", "bf16"), "beam5_sents_per_s_bf16": decode_rate("beam5", "bf16"),
        "greedy_default_precision": decode_precision["greedy"], "beam5_default_precision": decode_precision["beam5"],
        "device": machine.device,
        # What train.amp: auto (the default) trains in on this device: the figure users get.
        "train_default_precision": resolve_amp("auto", torch.device(machine.device)).precision,
        "package_over_floor": floor / package if package and floor else None,
        "package_parameters": by_name[("package", "fp32")].parameters,
        "floor_parameters": by_name[("floor", "fp32")].parameters,
        "batch_size_tokens": batch_size.max_tokens, "mean_tgt_tokens_per_batch": batch_size.mean_tgt_tokens,
        "train_tgt_tokens": train_tokens,
        "seconds_per_epoch": train_tokens / package if package else None,
        "windows": args.windows, "steps_per_window": args.steps_per_window, "warmup": args.warmup,
        "quick": args.quick, "clock": args.clock, "decode_weights": weights, "decode_repeats": args.decode_repeats,
        "decode_sentences": decoding["greedy"].sentences, "decode_batches": decoding["greedy"].batches,
        "decode_workers": decoding["greedy"].workers,
    }
    for figure in training:
        key = figure.name.replace(" ", "_") + "_" + figure.precision
        if figure.throughput is not None:
            out[f"{key}_peak_memory_mib"] = figure.throughput.peak_memory_mib
            out[f"{key}_windows"] = figure.throughput.per_window
            out[f"{key}_gpu_utilisation"] = figure.throughput.gpu_utilisation
    for key, result in decoding.items():
        out[f"{key}_peak_memory_mib"] = result.peak_memory_mib
        out[f"{key}_output_tokens"] = result.output_tokens
    out.update({f"machine_{k}": v for k, v in dataclasses.asdict(machine).items()})
    return out


def print_table(machine: MachineInfo, args: argparse.Namespace, figures: dict[str, Any],
                training: list[TrainFigure], weights: str) -> None:
    memory = "peak RSS" if machine.device == "cpu" else "max allocated"
    print(f"date      {machine.date}")
    print(f"device    {machine.device}" + (f" ({machine.gpu_model})" if machine.gpu_model else ""))
    print(f"cpu       {machine.cpu_model}, {machine.threads} torch threads")
    print(f"clock     {args.clock} (phase times in {'wall' if args.clock == 'wall' else 'process CPU'} seconds)")
    print(f"torch     {machine.torch_version}")
    print(f"command   {machine.command}")
    print(f"configs   {args.config} (reference), {args.luong_config} (Luong)")
    print(f"batches   train.batch_size={figures['batch_size_tokens']} tokens -> "
          f"{figures['mean_tgt_tokens_per_batch']:.1f} real target tokens per batch on average; "
          f"{args.windows} windows x {args.steps_per_window} steps after {args.warmup} warm-up steps"
          + (" (--quick)" if args.quick else ""))
    print()
    print(f"{'training':<22}{'params':>12}{'tgt tok/s':>11}{'windows (min-max)':>20}"
          f"{memory + ' MiB':>20}{'s/epoch':>9}")
    for figure in training:
        label = figure.label
        if figure.throughput is None:
            print(f"{label:<22}{'':>12}  not run: {figure.note}")
            continue
        t = figure.throughput
        spread = f"{min(t.per_window):,.0f}-{max(t.per_window):,.0f}"
        util = f"  GPU {t.gpu_utilisation:.0f}%" if t.gpu_utilisation is not None else ""
        print(f"{label:<22}{figure.parameters:>12,}{t.median:>11,.0f}{spread:>20}{t.peak_memory_mib:>20,.0f}"
              f"{figures['train_tgt_tokens'] / t.median:>9,.0f}{util}")
    if machine.device == "cpu":
        print("(peak RSS: the process's, so phases after the first may include memory the allocator kept from "
              "earlier ones)")
    ratio = figures["package_over_floor"]
    if ratio is not None:
        print(f"package/floor time per token (fp32): {ratio:.3f}x  (floor {figures['floor_tokens_per_s']:,.0f}, "
              f"package {figures['train_tokens_per_s']:,.0f} tgt tok/s; parameters "
              f"{figures['package_parameters']:,} vs {figures['floor_parameters']:,})")
    if figures["package_parameters"] != figures["floor_parameters"]:
        print("WARNING: the floor's parameter count differs from the package model's")
    print()
    print(f"decoding: test_2016_flickr, {figures['decode_sentences']} sentences in {figures['decode_batches']} "
          f"batches of at most {figures['decode_batch_tokens']} source tokens (decode.batch_size), "
          f"{figures['decode_workers']} searched at once (decode.workers), as `seq2seq translate` runs them; "
          f"search time only, median of {args.decode_repeats} round(s); {weights}")
    for key, label, rate_key, search in (
            ("greedy", "greedy fp32", "greedy_sents_per_s_fp32", "greedy"),
            ("beam5", "beam 5 fp32", "beam5_sents_per_s_fp32", "beam5"),
            ("greedy_bf16", "greedy bf16", "greedy_sents_per_s_bf16", "greedy"),
            ("beam5_bf16", "beam 5 bf16", "beam5_sents_per_s_bf16", "beam5")):
        if figures[rate_key] is None:
            continue
        per_sentence = figures[f"{key}_output_tokens"] / figures["decode_sentences"]
        default = "  <- decode.amp: auto" if label.endswith(figures[f"{search}_default_precision"]) else ""
        print(f"{label:<13}{figures[rate_key]:>9,.1f} sents/s{figures[f'{key}_peak_memory_mib']:>12,.0f} "
              f"MiB {memory}{per_sentence:>8.1f} output tokens/sentence{default}")
    print()
    print_flops(figures, training)
    print()
    print_targets(figures)


def flop_figures(training: list[TrainFigure], train_peak: float, decoding: dict[str, DecodeThroughput],
                 decode_peak: float) -> dict[str, Any]:
    """Achieved model FLOP/s of every phase and its share of the matmul peak timed in the same rounds."""
    out: dict[str, Any] = {"train_peak_flops": train_peak, "decode_peak_flops": decode_peak}
    for figure in training:
        if figure.throughput is not None:
            key = figure.name.replace(" ", "_") + "_" + figure.precision
            achieved = figure.throughput.median * figure.flops_per_tgt_token
            out[f"{key}_flops_per_tgt_token"] = figure.flops_per_tgt_token
            out[f"{key}_flops_per_s"] = achieved
            out[f"{key}_share_of_peak"] = achieved / train_peak
    for key, result in decoding.items():
        achieved = result.flops / result.seconds
        out[f"{key}_flops_per_s"] = achieved
        out[f"{key}_share_of_peak"] = achieved / decode_peak
        out[f"{key}_flops"] = result.flops
    out["train_share_of_peak"] = out.get("package_fp32_share_of_peak")
    out["greedy_share_of_peak"] = out.get("greedy_share_of_peak")
    out["beam5_share_of_peak"] = out.get("beam5_share_of_peak")
    return out


def print_flops(figures: dict[str, Any], training: list[TrainFigure]) -> None:
    """Model FLOPs per token (by hand, flops.py), achieved FLOP/s and the share of the same-run fp32 matmul peak."""
    print(f"matmul peak (fp32, {figures['machine_threads']} threads, same run): training rounds "
          f"{figures['train_peak_flops'] / 1e9:.1f} GFLOP/s, decoding rounds {figures['decode_peak_flops'] / 1e9:.1f}")
    for figure in training:
        key = figure.name.replace(" ", "_") + "_" + figure.precision
        if f"{key}_flops_per_s" in figures:
            print(f"{figure.label:<22}{figures[f'{key}_flops_per_tgt_token'] / 1e6:>8.1f} MFLOP per target token "
                  f"(training step){figures[f'{key}_flops_per_s'] / 1e9:>8.1f} GFLOP/s "
                  f"{100 * figures[f'{key}_share_of_peak']:>5.1f}% of peak")
    for key in ("greedy", "beam5", "greedy_bf16", "beam5_bf16"):
        if f"{key}_flops_per_s" in figures:
            achieved = figures[f"{key}_flops_per_s"] / 1e9
            print(f"{key:<22}{figures[f'{key}_flops'] / 1e9:>8.1f} GFLOP per search{achieved:>17.1f}"
                  f" GFLOP/s {100 * figures[f'{key}_share_of_peak']:>5.1f}% of peak")


def print_targets(figures: dict[str, Any]) -> None:
    """The targets, met or not: shares of the same-run fp32 matmul peak, which compare across CPUs (absolute
    speeds do not), and the package's time per token over the floor's."""
    shares = []
    for key, target in SHARE_TARGETS.items():
        value = figures.get(key)
        sense = "<=" if key == "package_over_floor" else ">="
        met = value is not None and (value <= target if sense == "<=" else value >= target)
        shares.append(f"{key} {'n/a' if value is None else f'{value:.3f}'} ({sense} {target:g}: "
                      f"{'met' if met else 'MISSED'})")
    print("targets   " + "; ".join(shares))


