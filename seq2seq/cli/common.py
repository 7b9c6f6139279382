"""What several commands share: the config argument with --set, the decoding options, the BLEU options."""

from __future__ import annotations

import argparse
from typing import Any, Callable

# A command: its name, its one-line help, the function adding its arguments, the handler that runs it.
Command = tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int | None]]

SET_HELP = "override a config field, e.g. --set train.lr=1e-3 (repeatable)"


def config_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("config", help="a YAML config file, or the name of a shipped one (see `seq2seq config list`)")
    sub.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help=SET_HELP)


def decode_arguments(sub: argparse.ArgumentParser, model_folders: bool = False) -> None:
    checkpoint_help = "a checkpoint written by `seq2seq train`; repeat it to decode with an ensemble"
    if model_folders:
        source = sub.add_mutually_exclusive_group(required=True)
        source.add_argument("-c", "--checkpoint", dest="checkpoints", action="append", metavar="CHECKPOINT",
                            help=checkpoint_help)
        source.add_argument("-m", "--model", help="a model folder written by `seq2seq export`, or a Hugging Face "
                                                  "Hub id (user/model)")
    else:
        sub.add_argument("-c", "--checkpoint", dest="checkpoints", action="append", required=True,
                         metavar="CHECKPOINT", help=checkpoint_help)
    sub.add_argument("--beam-size", type=int, help="1 = greedy (default: the checkpoint's decode.beam_size)")
    sub.add_argument("--nbest", type=int, help="hypotheses per sentence, best first (translate only)")
    sub.add_argument("--length-penalty", type=float, help="GNMT length penalty alpha; 0 = none")
    sub.add_argument("--max-length-a", type=float, help="output limit a * source_length + b: the a")
    sub.add_argument("--max-length-b", type=int, help="output limit a * source_length + b: the b")
    sub.add_argument("--min-length", type=int, help="minimum output length in tokens")
    sub.add_argument("--no-repeat-ngram", type=int, help="block repeated n-grams of this size; 0 = off")
    sub.add_argument("--batch-size", type=int, help="tokens per decoding batch")
    sub.add_argument("--workers", type=int, help="CPU: batches searched at once, each on its share of the threads; "
                                                 "0 = one per thread, 1 = one at a time (default: decode.workers)")
    sub.add_argument("--amp", choices=["auto", "off", "bf16", "fp16"],
                     help="search precision (decode.amp): auto = bf16 for beam search where the device has "
                          "bf16 matrix units; off = fp32")
    sub.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    sub.add_argument("--attention-plot", metavar="DIR", help="write one attention heatmap PNG per sentence")
    sub.add_argument("--sampling", action="store_true", default=None,
                     help="draw each token at random instead of searching; --nbest N gives N samples per sentence")
    sub.add_argument("--temperature", type=float, help="sampling: divide the log-probabilities by this")
    sub.add_argument("--top-k", type=int, help="sampling: draw among the K most probable tokens only; 0 = all")
    sub.add_argument("--top-p", type=float, help="sampling: draw within the top-p probability mass; 1 = all")
    sub.add_argument("--seed", type=int, help="sampling: the random seed (the same seed, the same samples)")
    sub.add_argument("--rescore", action="append", metavar="CHECKPOINT",
                     help="rerank the beam with this model's log-probability (e.g. one trained with "
                          "tokenizer.target_order=right_to_left); repeat it to score with an ensemble")
    sub.add_argument("--rescore-weight", type=float, default=0.5,
                     help="weight w of the rescoring model(s): (1 - w) log P_main + w log P_rescore (default 0.5)")


def decode_overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = ("beam_size", "nbest", "length_penalty", "max_length_a", "max_length_b", "min_length",
             "no_repeat_ngram", "batch_size", "workers", "amp", "sampling", "temperature", "top_k", "top_p", "seed")
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def bleu_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--json", dest="as_json", action="store_true", help="print the scores as one JSON object")
    sub.add_argument("--tokenize", default="13a", help="sacrebleu tokenizer for BLEU: 13a (default), intl, none, ...")
    sub.add_argument("--lowercase", action="store_true", help="case-insensitive BLEU, as some published figures are")
