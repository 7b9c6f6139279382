"""Commands that decode with a model: translate, evaluate, score, logprob, inspect."""

from __future__ import annotations

import argparse

from .common import Command, bleu_arguments, decode_arguments, decode_overrides


def _translate_arguments(sub: argparse.ArgumentParser) -> None:
    decode_arguments(sub, model_folders=True)
    sub.add_argument("-i", "--input", help="source sentences, one per line (default: stdin; .gz accepted)")
    sub.add_argument("-o", "--output", help="where translations go (default: stdout)")


def _run_translate(args: argparse.Namespace) -> None:
    from ..translate import translate_command

    translate_command(checkpoint=args.checkpoints, input_path=args.input, output_path=args.output,
                      decode_overrides=decode_overrides(args), device=args.device,
                      attention_plot=args.attention_plot, model=args.model, rescore=args.rescore,
                      rescore_weight=args.rescore_weight)


def _evaluate_arguments(sub: argparse.ArgumentParser) -> None:
    decode_arguments(sub)
    sub.add_argument("--src", required=True, help="source file (.gz accepted)")
    sub.add_argument("--ref", required=True, help="reference translations (.gz accepted)")
    sub.add_argument("-o", "--output", help="also write the translations to this file")
    bleu_arguments(sub)


def _run_evaluate(args: argparse.Namespace) -> None:
    from ..evaluate import evaluate_command

    evaluate_command(checkpoint=args.checkpoints, src_path=args.src, ref_path=args.ref,
                     decode_overrides=decode_overrides(args), device=args.device, as_json=args.as_json,
                     tokenize=args.tokenize, lowercase=args.lowercase, attention_plot=args.attention_plot,
                     output_path=args.output, rescore=args.rescore, rescore_weight=args.rescore_weight)


def _score_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--hyp", required=True, help="system output, one sentence per line (.gz accepted)")
    sub.add_argument("--ref", required=True, help="reference translations (.gz accepted)")
    bleu_arguments(sub)


def _run_score(args: argparse.Namespace) -> None:
    from ..evaluate import score_command

    score_command(hyp_path=args.hyp, ref_path=args.ref, as_json=args.as_json, tokenize=args.tokenize,
                  lowercase=args.lowercase)


def _logprob_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("-c", "--checkpoint", dest="checkpoints", action="append", required=True, metavar="CHECKPOINT",
                     help="a checkpoint written by `seq2seq train`; repeat it to score with an ensemble")
    sub.add_argument("--src", required=True, help="source sentences (.gz accepted)")
    sub.add_argument("--tgt", required=True, help="the translations to score, aligned with --src (.gz accepted)")
    sub.add_argument("-o", "--output", help="where the scores go (default: stdout)")
    sub.add_argument("--tokens", action="store_true", help="also print each target piece's log-probability")
    sub.add_argument("--json", dest="as_json", action="store_true", help="one JSON object per pair")
    sub.add_argument("--batch-size", type=int, help="tokens per batch (default: the checkpoint's decode.batch_size)")
    sub.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")


def _run_logprob(args: argparse.Namespace) -> None:
    from ..evaluate import logprob_command

    logprob_command(checkpoints=args.checkpoints, src_path=args.src, tgt_path=args.tgt, output_path=args.output,
                    device=args.device, tokens=args.tokens, as_json=args.as_json, batch_size=args.batch_size)


def _inspect_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("-c", "--checkpoint", required=True, help="a checkpoint written by `seq2seq train`")
    sub.add_argument("sentences", nargs="*", help="source sentences to inspect")
    sub.add_argument("-i", "--input", help="a file of source sentences, one per line")
    sub.add_argument("--json", dest="as_json", action="store_true", help="one JSON object per sentence")
    sub.add_argument("--plot", metavar="DIR", help="write attention and update-gate PNGs here")
    sub.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:N")


def _run_inspect(args: argparse.Namespace) -> None:
    from ..inspection import inspect_command

    inspect_command(checkpoint=args.checkpoint, sentences=args.sentences, input_path=args.input,
                    as_json=args.as_json, plot_dir=args.plot, device=args.device)


COMMANDS: list[Command] = [
    ("translate", "translate sentences with a checkpoint or an exported model folder", _translate_arguments, _run_translate),
    ("evaluate", "translate a test set and score it (BLEU, chrF, TER)", _evaluate_arguments, _run_evaluate),
    ("score", "score existing translations against references", _score_arguments, _run_score),
    ("logprob", "forced decoding: the log-probability a model gives given translations (not BLEU)", _logprob_arguments, _run_logprob),
    ("inspect", "show the context vector, attention and GRU gates of a model on a sentence", _inspect_arguments, _run_inspect),
]
