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
on test_2016_flickr, in batches of 64 sentences, search time only, in fp32 and under bf16
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
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from benchmarking import (BatchSize, DecodeThroughput, MachineInfo, Throughput, batch_size_for,
                          decoding_batches, describe_machine, package_trainer, reencode, time_decoding,
                          time_interleaved, training_batches, warm_up)
from flops import CountingModel, FlopCount, batch_work, count_flops, matmul_peak_step, peak_flops
from seq2seq.checkpoint import load_model
from seq2seq.config import Config, ModelConfig, load_config
from seq2seq.data import Batch, prepare
from seq2seq.device import (AmpSettings, cpu_has_bf16_matrix_units, resolve_amp, resolve_decode_amp,
                            resolve_device)
from seq2seq.errors import ConfigError, Seq2SeqError

# What this CPU should reach at about 950 real target tokens per batch (the targets).
TARGETS = {"train_tokens_per_s": 2600.0, "package_over_floor": 1.15, "greedy_sents_per_s": 550.0,
           "beam5_sents_per_s": 160.0}
# Shares of the same-run fp32 matmul peak (these hold on any CPU): training fp32, and package/floor.
SHARE_TARGETS = {"train_share_of_peak": 0.60, "package_over_floor": 0.70, "greedy_share_of_peak": 0.55,
                 "beam5_share_of_peak": 0.55}
PEAK = "matmul peak"
NO_BF16_UNITS = "skipped: this CPU has no bf16 matrix units (AMX), so bf16 is emulated and many times slower"
DECODE_BATCH_SENTENCES = 64


# --- The floor: the reference shape in plain PyTorch, no package code. ---------------------------------------

class FloorSeq2Seq(nn.Module):
    """Bidirectional packed GRU encoder, tanh(Linear) bridge per layer, additive-attention GRU decoder.

    The shape (and so the parameter count) of the package's reference model: the decoder
    attends from the previous top-layer state, feeds [e_{t-1}; c_t] to its GRU, and reads out
    tanh(W [s_t; c_t; e_{t-1}]) of embedding size before the vocabulary projection, tied to the
    target embedding (and that to the source one) when the config says so.
    """

    def __init__(self, *, src_vocab_size: int, tgt_vocab_size: int, embedding_size: int, hidden_size: int,
                 num_layers: int, decoder_hidden_size: int, dropout: float, tied_embeddings: bool,
                 share_embeddings: bool) -> None:
        super().__init__()
        context_size = 2 * hidden_size
        between_layers = dropout if num_layers > 1 else 0.0  # nn.GRU's dropout acts between layers only
        self.num_layers, self.hidden_size = num_layers, hidden_size
        self.src_embedding = nn.Embedding(src_vocab_size, embedding_size, padding_idx=0)
        self.encoder = nn.GRU(embedding_size, hidden_size, num_layers, batch_first=True, bidirectional=True,
                              dropout=between_layers)
        self.bridge = nn.ModuleList(nn.Linear(context_size, decoder_hidden_size) for _ in range(num_layers))
        self.tgt_embedding = (self.src_embedding if share_embeddings
                              else nn.Embedding(tgt_vocab_size, embedding_size, padding_idx=0))
        self.key_proj = nn.Linear(context_size, decoder_hidden_size, bias=False)
        self.query_proj = nn.Linear(decoder_hidden_size, decoder_hidden_size)
        self.energy = nn.Linear(decoder_hidden_size, 1, bias=False)
        self.decoder = nn.GRU(embedding_size + context_size, decoder_hidden_size, num_layers, batch_first=True,
                              dropout=between_layers)
        self.readout = nn.Linear(decoder_hidden_size + context_size + embedding_size, embedding_size)
        self.output = nn.Linear(embedding_size, tgt_vocab_size)
        if tied_embeddings:
            self.output.weight = self.tgt_embedding.weight  # the readout is E wide so that it can share
        self.dropout = nn.Dropout(dropout)

    def forward(self, src_ids: Tensor, src_lengths: Tensor, tgt_in_ids: Tensor) -> Tensor:
        """src_ids (B, S), src_lengths (B,) on the CPU, tgt_in_ids (B, T) -> logits (B, T, V)."""
        batch_size, src_len = src_ids.shape
        packed = pack_padded_sequence(self.dropout(self.src_embedding(src_ids)), src_lengths, batch_first=True,
                                      enforce_sorted=False)
        packed_out, h_n = self.encoder(packed)
        enc_out, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=src_len)  # (B, S, 2H)
        h_n = h_n.view(self.num_layers, 2, batch_size, self.hidden_size)
        joined = torch.cat([h_n[:, 0], h_n[:, 1]], dim=-1)  # (L, B, 2H)
        hidden = torch.stack([torch.tanh(layer(h)) for layer, h in zip(self.bridge, joined)])  # (L, B, Hd)
        pad_mask = (torch.arange(src_len, device=src_ids.device)[None, :]
                    >= src_lengths.to(src_ids.device)[:, None])  # (B, S), True = padding
        keys = self.key_proj(enc_out)  # (B, S, A), once per batch
        tgt_embedded = self.dropout(self.tgt_embedding(tgt_in_ids))  # (B, T, E)
        tops, contexts = [], []
        for embedded_t in tgt_embedded.split(1, dim=1):  # (B, 1, E)
            scores = self.energy(torch.tanh(keys + self.query_proj(hidden[-1])[:, None, :])).squeeze(-1)
            weights = torch.softmax(scores.float().masked_fill(pad_mask, float("-inf")), dim=-1)
            context = torch.bmm(weights[:, None, :].to(enc_out.dtype), enc_out)  # (B, 1, 2H)
            top, hidden = self.decoder(torch.cat([embedded_t, context], dim=-1), hidden)
            tops.append(top)
            contexts.append(context)
        # Readout and vocabulary projection once over all T steps, outside the loop.
        readout = torch.tanh(self.readout(torch.cat([torch.cat(tops, 1), torch.cat(contexts, 1), tgt_embedded],
                                                    dim=-1)))
        return self.output(self.dropout(readout))


def floor_trainer(model_cfg: ModelConfig, train_cfg: Any, src_vocab_size: int, tgt_vocab_size: int,
                  device: torch.device, amp: AmpSettings) -> tuple[nn.Module, Callable[[Batch], Tensor]]:
    """The floor model and one training update on a batch: autocast forward, label-smoothed cross-entropy
    per real target token, backward, gradient clipping, Adam (fused, like the package)."""
    shape = (model_cfg.attention, model_cfg.bidirectional, model_cfg.bridge)
    if shape != ("bahdanau", True, "linear"):
        raise ConfigError(f"the floor is written for model.attention=bahdanau, model.bidirectional=true and "
                          f"model.bridge=linear; --config has {shape}: pass a config of that shape")
    torch.manual_seed(train_cfg.seed)
    model = FloorSeq2Seq(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size,
                         embedding_size=model_cfg.embedding_size, hidden_size=model_cfg.hidden_size,
                         num_layers=model_cfg.num_layers, decoder_hidden_size=model_cfg.decoder_hidden_size,
                         dropout=model_cfg.dropout, tied_embeddings=model_cfg.tied_embeddings,
                         share_embeddings=model_cfg.share_embeddings).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=train_cfg.lr, betas=tuple(train_cfg.betas), fused=True)

    def step(batch: Batch) -> Tensor:
        with torch.autocast(device.type, dtype=amp.dtype, enabled=amp.enabled):
            logits = model(batch.src_ids, batch.src_lengths, batch.tgt_in_ids)
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch.tgt_out_ids.flatten(), ignore_index=0,
                               label_smoothing=train_cfg.label_smoothing, reduction="sum")
        (loss / batch.num_tgt_tokens).backward()
        nn.utils.clip_grad_norm_(model.parameters(), train_cfg.clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return model, step


# --- Running the phases. ------------------------------------------------------------------------------------

@contextlib.contextmanager
def progress(what: str) -> Iterator[None]:
    """Say on stderr what is being timed and how long the whole phase (warm-up included) took."""
    print(f"  {what} ...", end="", file=sys.stderr, flush=True)
    start = time.perf_counter()
    yield
    print(f" {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)


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
    batches = decoding_batches(test, DECODE_BATCH_SENTENCES, device, limit=256 if args.quick else None)
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
    with progress(f"counting the FLOPs of each search (one untimed pass each)"):
        flops = {key: search_flops(model, model_cfg, batches, options) for key, options in searches.items()}
    peaks = []
    with progress(f"decoding: {len(searches)} searches x {args.decode_repeats} rounds, taking turns"):
        for _ in range(args.decode_repeats):
            peaks.append(peak_flops(device))
            for key, options in searches.items():
                rounds[key].append(time_decoding(model, batches, options, device))
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


# --- Reporting. --------------------------------------------------------------------------------------------

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
        "quick": args.quick, "decode_weights": weights, "decode_repeats": args.decode_repeats,
        "decode_sentences": decoding["greedy"].sentences,
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
    print(f"decoding: test_2016_flickr, {figures['decode_sentences']} sentences in batches of "
          f"{DECODE_BATCH_SENTENCES}, search time only, median of {args.decode_repeats} round(s); {weights}")
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
            print(f"{key:<22}{figures[f'{key}_flops'] / 1e9:>8.1f} GFLOP per search{figures[f'{key}_flops_per_s'] / 1e9:>17.1f}"
                  f" GFLOP/s {100 * figures[f'{key}_share_of_peak']:>5.1f}% of peak")


def print_targets(figures: dict[str, Any]) -> None:
    """The issue's targets for this CPU, met or not (they only mean something on that CPU with trained weights)."""
    default = figures["train_default_precision"]
    trained = {"fp32": figures["train_tokens_per_s"], "bf16": figures["train_tokens_per_s_bf16"]}.get(default)
    checks = [(f"training ({default}, train.amp: auto here)", trained, ">=", TARGETS["train_tokens_per_s"]),
              ("package/floor", figures["package_over_floor"], "<=", TARGETS["package_over_floor"]),
              (f"greedy ({figures['greedy_default_precision']})", figures["greedy_sents_per_s"], ">=",
               TARGETS["greedy_sents_per_s"]),
              (f"beam 5 ({figures['beam5_default_precision']})", figures["beam5_sents_per_s"], ">=",
               TARGETS["beam5_sents_per_s"])]
    parts = []
    for label, value, sense, target in checks:
        met = value is not None and (value >= target if sense == ">=" else value <= target)
        shown = "n/a" if value is None else f"{value:,.2f}" if target < 10 else f"{value:,.0f}"
        parts.append(f"{label} {shown} ({sense} {target:g}: {'met' if met else 'MISSED'})")
    print("targets   " + "; ".join(parts))
    shares = []
    for key, target in SHARE_TARGETS.items():
        value = figures.get(key)
        sense = "<=" if key == "package_over_floor" else ">="
        met = value is not None and (value <= target if sense == "<=" else value >= target)
        shares.append(f"{key} {'n/a' if value is None else f'{value:.3f}'} ({sense} {target:g}: "
                      f"{'met' if met else 'MISSED'})")
    print("shares    " + "; ".join(shares))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        ref_cfg = load_config(args.config, args.overrides)
        luong_cfg = load_config(args.luong_config, args.overrides)
        device = resolve_device(args.device)
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
    figures.update(flop_figures(training, train_peak, decoding, decode_peak))
    print_table(machine, args, figures, training, weights)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
