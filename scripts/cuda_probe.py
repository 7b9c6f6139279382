#!/usr/bin/env python
"""What one training step and one decoder step of the reference shape cost in launches and host syncs.

    python scripts/cuda_probe.py [--device cuda] [--config configs/multi30k_de_en.yaml]

Builds the config's model (vocabulary of tokenizer.vocab_size, random weights) and random batches of
Multi30k's shape, then prints: the dtype the GRUs compute in under bf16 autocast; host synchronisations per
training step (CUDA's sync debug mode); kernel launches per training step and per decoder step
(torch.profiler). On the CPU (no GPU, or --device cpu) the same runs, with operator counts in place
of kernel launches and no sync count: a dry run of the script itself.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import torch
from torch.nn.utils.rnn import PackedSequence
from torch.profiler import ProfilerActivity, profile

from seq2seq.config import load_config
from seq2seq.device import resolve_amp, resolve_device
from seq2seq.model.seq2seq import Seq2Seq
from seq2seq.training.loss import Objective
from seq2seq.training.step import build_optimizer

LAUNCHES = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cudaGraphLaunch")


def random_batch(vocab: int, batch: int, src_len: int, tgt_len: int, device: torch.device):
    """src_ids (B, S), src_lengths (B,) on the CPU (pinned on CUDA), tgt_in_ids, tgt_out_ids (B, T)."""
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(src_len // 2, src_len + 1, (batch,), generator=generator)
    src = torch.randint(4, vocab, (batch, src_len), generator=generator)
    src[torch.arange(src_len)[None, :] >= lengths[:, None]] = 0
    tgt = torch.randint(4, vocab, (batch, tgt_len + 1), generator=generator)
    tgt[:, 0] = 2
    if device.type == "cuda":
        lengths = lengths.pin_memory()
    return src.to(device), lengths, tgt[:, :-1].to(device), tgt[:, 1:].to(device)


def gru_dtypes(model: Seq2Seq, batch, device: torch.device) -> set[str]:
    """The dtypes nn.GRU calls return in one bf16-autocast forward (eval mode: one call per GRU). The output
    shows what the kernel ran in: autocast casts inside the operator, after a pre-hook would look."""
    seen: set[str] = set()
    hooks = [gru.register_forward_hook(lambda m, args, out: seen.add(str(
        (out[0].data if isinstance(out[0], PackedSequence) else out[0]).dtype)))
        for gru in (model.encoder.gru, model.decoder.gru)]
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
        model(*batch[:3])
    for hook in hooks:
        hook.remove()
    model.train()
    return seen


def count_events(fn, device: torch.device) -> int:
    """Kernel launches (CUDA) or operators (CPU) that one call of ``fn`` makes."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    names = [event.name for event in prof.events()]
    if device.type == "cuda":
        return sum(name in LAUNCHES for name in names)
    return sum(name.startswith("aten::") for name in names)


def count_syncs(fn, device: torch.device) -> int | None:
    """Host synchronisations in one call of ``fn`` (CUDA's sync debug mode), None on the CPU."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def time_test_decoding(checkpoint: str, config: str, device: torch.device, limit: int | None) -> int:
    """Greedy and beam-5 search time (search only, batched as `seq2seq translate` does) over the test split."""
    import dataclasses

    from benchmarking import decoding_batches, reencode, time_decoding
    from seq2seq.checkpoint import load_model
    from seq2seq.data import prepare

    loaded = load_model(checkpoint, device)
    cfg = load_config(config, [])
    test = reencode(prepare(cfg, verbose=False).test, loaded.tokenizer, cfg.data.max_length)
    batches, workers = decoding_batches(test, loaded.config.decode, device, limit=limit)
    for beam in (1, 5):
        options = dataclasses.replace(loaded.config.decode, beam_size=beam, nbest=1)
        result = time_decoding(loaded.model, batches, options, device, workers)
        print(f"{'greedy' if beam == 1 else 'beam 5'} ({device}, decode.amp={options.amp}): {result.sentences} "
              f"sentences in {result.seconds:.2f} s = {result.sents_per_s:,.0f} sentences/s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/multi30k_de_en.yaml")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=120, help="sentences per batch (default 120: 2048 tokens)")
    parser.add_argument("--time-decoding", metavar="CHECKPOINT",
                        help="instead: time greedy and beam-5 search of the config's test split with CHECKPOINT")
    parser.add_argument("--limit", type=int, help="with --time-decoding: only this many test sentences")
    args = parser.parse_args(argv)
    if args.time_decoding:
        return time_test_decoding(args.time_decoding, args.config, resolve_device(args.device), args.limit)
    cfg = load_config(args.config, [])
    device = resolve_device(args.device)
    vocab = cfg.tokenizer.vocab_size
    torch.manual_seed(0)
    model = Seq2Seq.from_config(cfg.model, vocab, vocab).to(device)
    batch = random_batch(vocab, args.batch, 16, 17, device)
    print(f"device {device}; {cfg.model.attention} model, {model.num_parameters():,} parameters, batch {args.batch}")
    print(f"GRU output dtype under bf16 autocast: {', '.join(sorted(gru_dtypes(model, batch, device)))}")
    objective = Objective(model, cfg.train.label_smoothing, cfg.train.teacher_forcing)
    optimizer = build_optimizer(model, cfg.train)
    for precision in ("off", "bf16"):
        amp = resolve_amp(precision, device)

        def step() -> None:
            with torch.autocast(device.type, dtype=amp.dtype, enabled=amp.enabled):
                sums = objective(*batch)
            (sums[0] / 1000).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        step()
        what = "kernel launches" if device.type == "cuda" else "operators"
        syncs = count_syncs(step, device)
        print(f"training step ({amp.precision}): {count_events(step, device)} {what}, "
              f"{'n/a (CPU)' if syncs is None else syncs} host syncs")
    model.eval()
    with torch.no_grad():
        enc = model.encode(batch[0], batch[1])
        state = model.init_state(enc)
        prev = batch[2][:, 0]
        decode = lambda: model.decode_step(prev, state, enc)  # noqa: E731
        decode()
        print(f"decoder step (fp32, {args.batch} hypotheses): {count_events(decode, device)} "
              f"{'kernel launches' if device.type == 'cuda' else 'operators'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
