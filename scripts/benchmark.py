#!/usr/bin/env python
"""Training and decoding throughput of seq2seq on Multi30k, against a plain-PyTorch floor of the same shape.

Run from the repository root (the configs' data paths are relative to it)::

    python scripts/benchmark.py                 # the full run (a few minutes on a 2-core CPU)
    python scripts/benchmark.py --quick         # every figure, shorter windows (under 2 minutes)
    python scripts/benchmark.py --checkpoint runs/m30k/best.pt --json bench.json
    taskset -c 1 python scripts/benchmark.py --threads 1 --fp32-only --skip-luong   # one core, fp32 only

Training: real (non-pad) target tokens per second of the package's own training step
(``seq2seq.training.step.train_step``) in steady state, the median of several timed windows after
warm-up, fp32 and bf16 autocast, for the reference config and the Luong config; and the same
for the *floor*, the reference shape written directly in plain PyTorch below, fed the same
batches and timed the same way. Decoding: sentences per second of greedy and beam-5 search
on test_2016_flickr, batched as ``seq2seq translate`` batches them (longest first, at most
``decode.batch_size`` source tokens per batch), search time only, in fp32 and under bf16
autocast.

Each phase is also reported as achieved model FLOP/s and as a share of the CPU's (or GPU's)
fp32 matrix-product peak measured in the same run: a 2048 x 2048 matmul with the same threads
takes its turn among the training windows, and runs before, between and after the decoding
rounds. Model FLOPs are counted by hand (scripts/flops.py: 2·m·n·k for every matrix product the
configured model needs per real token, x3 for a training step) and the per-token count is
printed; search FLOPs count the hypotheses each search actually stepped (one untimed pass).
On a CPU without bf16 matrix units (AMX) the bf16 phases are skipped with a note.

On a shared machine the speed drifts from minute to minute, so the phases take turns: one
timed window of every training phase before the next window of any, and one round of every
search before the next round. A slow spell then falls on all of them alike, and the ratios
printed (package/floor, bf16/fp32) compare figures measured side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from benchmark_report import (NO_BF16_UNITS, PEAK, TrainFigure, figures_dict,
                              flop_figures, print_table)
from benchmarking import (BatchSize, DecodeThroughput, batch_size_for, decoding_batches, describe_machine,
                          package_trainer, reencode, time_decoding, time_interleaved, training_batches, warm_up)
from floor import floor_trainer
from flops import CountingModel, batch_work, count_flops, matmul_peak_step, peak_flops, use_cpu_clock
from seq2seq.checkpoint import load_model
from seq2seq.config import Config, ModelConfig, load_config
from seq2seq.data import Batch, prepare
from seq2seq.device import cpu_has_bf16_matrix_units, resolve_amp, resolve_decode_amp, resolve_device
from seq2seq.errors import ConfigError, Seq2SeqError

# --- Running the phases. ------------------------------------------------------------------------------------

@contextlib.contextmanager
def progress(what: str) -> Iterator[None]:
    """Say on stderr what is being timed and how long the whole phase (warm-up included) took."""
    print(f"  {what} ...", end="", file=sys.stderr, flush=True)
    start = time.perf_counter()
    yield
    print(f" {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="shorter windows and a 256-sentence test subset: every figure in under 2 minutes")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures to PATH as JSON")
    parser.add_argument("--config", default="configs/multi30k_de_en.yaml", help="the reference config")
    parser.add_argument("--luong-config", default="configs/multi30k_de_en_luong.yaml",
                        help="the Luong config (its model section; data and batches come from --config)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="config override applied to both configs, e.g. data.train=/data/multi30k/train")
    parser.add_argument("--checkpoint", type=Path, help="time decoding with this trained model instead of "
                        "random weights (which run every sentence to the length limit)")
    parser.add_argument("--windows", type=int, help="timed windows per training phase (default 5; quick 3)")
    parser.add_argument("--steps-per-window", type=int, help="training steps per window (default 20; quick 4)")
    parser.add_argument("--warmup", type=int, help="untimed steps before the windows (default 5; quick 2)")
    parser.add_argument("--tgt-tokens-per-batch", type=float, default=950.0,
                        help="choose the token batch size so that batches average this many real target tokens")
    parser.add_argument("--decode-repeats", type=int,
                        help="rounds of each search, taking turns; the median round counts (default 3; quick 1)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--fp32-only", action="store_true", help="skip the bf16 phases and searches")
    parser.add_argument("--skip-luong", action="store_true", help="skip the Luong training phases")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall seconds (default), or this process's CPU seconds per thread: on a CPU shared "
                        "with other jobs, at 1 thread, it leaves out the time they held the core")
    args = parser.parse_args(argv)
    args.precisions = ("fp32",) if args.fp32_only else ("fp32", "bf16")
    defaults = (3, 4, 2, 1) if args.quick else (5, 20, 5, 3)
    for key, default in zip(("windows", "steps_per_window", "warmup", "decode_repeats"), defaults):
        if getattr(args, key) is None:
            setattr(args, key, default)
    for key in ("windows", "steps_per_window", "decode_repeats"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or (args.threads is not None and args.threads < 1) or args.tgt_tokens_per_batch < 1:
        parser.error("--warmup must be >= 0, --threads and --tgt-tokens-per-batch >= 1")
    return args


def run_training(args: argparse.Namespace, ref_cfg: Config, luong_cfg: Config, data: Any,
                 batch_size: BatchSize, device: torch.device) -> tuple[list[TrainFigure], float]:
    """The six phases (package, floor, Luong; fp32 and bf16) on the same batches in the same order, and the
    median FLOP/s of a large fp32 matmul timed as a seventh phase between them (the same-run peak).

    Each phase is built and warmed up in turn (its peak memory is read there); then the
    timed windows run round-robin across the phases, so that a noisy spell on a shared
    machine slows every phase alike and the ratios between them stay meaningful.
    """
    batches = training_batches(data.train, batch_size.max_tokens, args.warmup + args.windows * args.steps_per_window,
                               device, seed=ref_cfg.train.seed)
    cfg_of = {"package": ref_cfg, "floor": ref_cfg, "package luong": luong_cfg}
    if args.skip_luong:
        del cfg_of["package luong"]
    warmup_batches, timed_batches = batches[:args.warmup], batches[args.warmup:]
    figures, steps = [], {}
    for name, cfg in cfg_of.items():
        for precision in args.precisions:
            with progress(f"building and warming up {name} {precision}"):
                figure, step = build_training_phase(name, cfg, precision, data.tokenizer, warmup_batches, device)
            figures.append(figure)
            if step is not None:
                steps[figure.label] = step
    peak_step, peak_flops_per_step = matmul_peak_step(device)
    steps[PEAK] = peak_step
    with progress(f"timing {args.windows} windows x {args.steps_per_window} steps of each phase, round-robin"):
        timed = time_interleaved(steps, timed_batches, windows=args.windows, steps_per_window=args.steps_per_window,
                                 device=device)
    for figure in figures:
        if figure.label in timed:
            figure.throughput = dataclasses.replace(timed[figure.label], peak_memory_mib=figure.peak_memory_mib)
            figure.flops_per_tgt_token = training_flops_per_tgt_token(
                cfg_of[figure.name].model, data.tokenizer.tgt_vocab_size, timed_batches)
    peak = timed[PEAK]
    peak_per_window = [rate / tokens * args.steps_per_window * peak_flops_per_step
                       for rate, tokens in zip(peak.per_window, peak.units_per_window)]
    return figures, statistics.median(peak_per_window)


def training_flops_per_tgt_token(model_cfg: ModelConfig, tgt_vocab_size: int, batches: list[Batch]) -> float:
    """FLOPs of a training step (3x the forward) per real target token, over exactly the timed batches."""
    count = count_flops(model_cfg, tgt_vocab_size)
    work = [batch_work(b.src_lengths, (b.tgt_out_ids != 0).sum(1)) for b in batches]
    src, tgt, pairs = (sum(w[i] for w in work) for i in range(3))
    return 3.0 * count.forward(src, tgt, pairs) / tgt


def build_training_phase(name: str, cfg: Config, precision: str, tokenizer: Any, warmup_batches: list[Batch],
                         device: torch.device) -> tuple[TrainFigure, Callable[[Batch], Any] | None]:
    """A fresh model (the floor, or the package's) with its training step, warmed up; None where
    the precision cannot run on this device (the figure's note says why)."""
    if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16_matrix_units():
        return TrainFigure(name, precision, 0, None, note=NO_BF16_UNITS), None
    try:
        amp = resolve_amp("off" if precision == "fp32" else "bf16", device)
    except ConfigError as exc:
        return TrainFigure(name, precision, 0, None, note=str(exc)), None
    src_vocab, tgt_vocab = tokenizer.src_vocab_size, tokenizer.tgt_vocab_size
    if name == "floor":
        model, step = floor_trainer(cfg.model, cfg.train, src_vocab, tgt_vocab, device, amp)
    else:
        trainer = package_trainer(cfg, src_vocab, tgt_vocab, device, amp)
        model, step = trainer.model, trainer.step
    parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    peak = warm_up(step, warmup_batches, device)
    return TrainFigure(name, precision, parameters, None, peak_memory_mib=peak), step


def run_decoding(args: argparse.Namespace, ref_cfg: Config, data: Any,
                 device: torch.device) -> tuple[str, dict[str, DecodeThroughput], dict[str, str], float]:
    """Greedy and beam-5 search over test_2016_flickr (a subset with --quick), fp32 and under bf16 autocast.

    The four searches take turns, ``--decode-repeats`` rounds; each keeps its median round.
    Returns which weights were used, the figures under greedy, beam5 (fp32), greedy_bf16, beam5_bf16, and
    the precision ``decode.amp: auto`` picks here for greedy and beam5, and the median FLOP/s of a large
    fp32 matmul timed before, between and after the rounds (the same-run peak).
    """
    if data.test is None:
        raise ConfigError(f"{args.config} has no data.test split to time decoding on")
    if args.checkpoint is not None:
        loaded = load_model(args.checkpoint, device)
        model, tokenizer, weights = loaded.model, loaded.tokenizer, f"trained weights from {args.checkpoint}"
        model_cfg = loaded.config.model
    else:
        torch.manual_seed(ref_cfg.train.seed)
        from seq2seq.model.seq2seq import Seq2Seq

        model = Seq2Seq.from_config(ref_cfg.model, data.tokenizer.src_vocab_size,
                                    data.tokenizer.tgt_vocab_size).to(device)
        tokenizer, model_cfg = data.tokenizer, ref_cfg.model
        weights = "random weights (every sentence runs to the length limit: not representative; pass --checkpoint)"
    test = reencode(data.test, tokenizer, ref_cfg.data.max_length)
    batches, workers = decoding_batches(test, ref_cfg.decode, device, limit=256 if args.quick else None)
    searches = {}
    for amp in ("off", "bf16") if "bf16" in args.precisions else ("off",):
        if amp == "bf16" and device.type == "cpu" and not cpu_has_bf16_matrix_units():
            print(f"  bf16 searches {NO_BF16_UNITS}", file=sys.stderr)
            continue
        try:
            resolve_amp(amp, device)
        except ConfigError:
            continue  # a GPU without bf16: its fp32 figures still stand
        for key, beam_size in (("greedy", 1), ("beam5", 5)):
            options = dataclasses.replace(ref_cfg.decode, beam_size=beam_size, nbest=1, amp=amp)
            searches[key if amp == "off" else f"{key}_bf16"] = options
    # What `seq2seq translate` runs by default (decode.amp: auto) on this device, for the targets.
    # fp16 (older GPUs) is not timed: its figure reads n/a.
    default_precision = {key: resolve_decode_amp("auto", device, beam_size).precision
                         for key, beam_size in (("greedy", 1), ("beam5", 5))}
    rounds: dict[str, list[DecodeThroughput]] = {key: [] for key in searches}
    with progress("counting the FLOPs of each search (one untimed pass each)"):
        flops = {key: search_flops(model, model_cfg, batches, options) for key, options in searches.items()}
    peaks = []
    with progress(f"decoding: {len(searches)} searches x {args.decode_repeats} rounds, taking turns"):
        for _ in range(args.decode_repeats):
            peaks.append(peak_flops(device))
            for key, options in searches.items():
                rounds[key].append(time_decoding(model, batches, options, device, workers))
        peaks.append(peak_flops(device))
    results = {key: dataclasses.replace(median_round(r), flops=flops[key]) for key, r in rounds.items()}
    return weights, results, default_precision, statistics.median(peaks)


def search_flops(model: nn.Module, model_cfg: ModelConfig, batches: list[Batch], options: Any) -> float:
    """The FLOPs one search over ``batches`` asks of the model (encoder, and one decoder step per hypothesis)."""
    from seq2seq.search import search

    counter = CountingModel(model.eval())
    for batch in batches:
        search(counter, batch.src_ids, batch.src_lengths, options)
    return count_flops(model_cfg, model.tgt_vocab_size).forward(counter.src_tokens, counter.steps, counter.pairs)


def median_round(results: list[DecodeThroughput]) -> DecodeThroughput:
    """The round with the median speed (the upper median for an even count), with the highest peak memory."""
    ordered = sorted(results, key=lambda r: r.sents_per_s)
    return dataclasses.replace(ordered[len(ordered) // 2], peak_memory_mib=max(r.peak_memory_mib for r in results))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        if args.clock == "cpu":
            use_cpu_clock()
        ref_cfg = load_config(args.config, args.overrides)
        luong_cfg = load_config(args.luong_config, args.overrides)
        device = resolve_device(args.device)
        if args.clock == "cpu" and device.type != "cpu":
            raise ConfigError(f"--clock cpu times CPU work; {device} runs asynchronously: use --clock wall")
        machine = describe_machine(device, [sys.argv[0], *argv])
        with progress("preparing the data"):
            data = prepare(ref_cfg, verbose=False)
        batch_size = batch_size_for(data.train, args.tgt_tokens_per_batch, seed=ref_cfg.train.seed)
        training, train_peak = run_training(args, ref_cfg, luong_cfg, data, batch_size, device)
        weights, decoding, decode_precision, decode_peak = run_decoding(args, ref_cfg, data, device)
    except Seq2SeqError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    train_tokens = int(data.train.tgt_lengths.sum()) + len(data.train)
    figures = figures_dict(machine, args, batch_size, train_tokens, training, weights, decoding, decode_precision)
    figures["decode_batch_tokens"] = ref_cfg.decode.batch_size
    figures.update(flop_figures(training, train_peak, decoding, decode_peak))
    print_table(machine, args, figures, training, weights)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
