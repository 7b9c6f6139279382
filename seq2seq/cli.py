"""The `seq2seq` command: each subcommand parses its arguments and calls one function of the package."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

from . import __version__
from .config import load_config
from .errors import Seq2SeqError
from .logs import setup_logging

# Each handler imports its command's module when it runs, so that `seq2seq --help` and argument
# errors answer at once instead of paying for torch first.
SET_HELP = "override a config field, e.g. --set train.lr=1e-3 (repeatable)"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    parser = _build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["seq2seq", *argv])
    setup_logging(args.quiet)
    try:
        return args.handler(args) or 0
    except Seq2SeqError as exc:
        print(f"seq2seq {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"seq2seq {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our stdout went away (e.g. `| head`): not an error of ours.
        sys.stderr.close()
        return 0
    except OSError as exc:  # one the package did not word itself; its text names the file and the cause
        print(f"seq2seq {args.command}: error: {exc}", file=sys.stderr)
        return 1


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seq2seq", description="Recurrent neural machine translation with GRUs.")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    parser.add_argument("--version", action="version", version=f"seq2seq {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, helptext, add_arguments, handler in _COMMANDS:
        sub = commands.add_parser(name, help=helptext, description=helptext)
        add_arguments(sub)
        sub.set_defaults(handler=handler)
    return parser


def _config_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("config", help="a YAML config file, or the name of a shipped one (see `seq2seq config list`)")
    sub.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help=SET_HELP)


def _decode_arguments(sub: argparse.ArgumentParser, model_folders: bool = False) -> None:
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


def _decode_overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = ("beam_size", "nbest", "length_penalty", "max_length_a", "max_length_b", "min_length",
             "no_repeat_ngram", "batch_size", "amp", "sampling", "temperature", "top_k", "top_p", "seed")
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def _bleu_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--json", dest="as_json", action="store_true", help="print the scores as one JSON object")
    sub.add_argument("--tokenize", default="13a", help="sacrebleu tokenizer for BLEU: 13a (default), intl, none, ...")
    sub.add_argument("--lowercase", action="store_true", help="case-insensitive BLEU, as some published figures are")


def _prepare_arguments(sub: argparse.ArgumentParser) -> None:
    _config_arguments(sub)


def _run_prepare(args: argparse.Namespace) -> None:
    from .data import prepare

    prepare(load_config(args.config, args.overrides))


def _train_arguments(sub: argparse.ArgumentParser) -> None:
    _config_arguments(sub)
    sub.add_argument("--run-dir", help="where checkpoints, the config and the log go (default: runs/<config name>)")
    sub.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last.pt")
    sub.add_argument("--overwrite", action="store_true", help="discard a run already in --run-dir")
    sub.add_argument("--init-from", metavar="CHECKPOINT",
                     help="fine-tune: start from this checkpoint's weights and tokenizer, with a fresh optimizer, "
                          "schedule and step count (sets train.init_from)")


def _run_train(args: argparse.Namespace) -> int:
    """Exit status 0 for a finished run; 130 / 143 for one a SIGINT / SIGTERM stopped (after saving last.pt)."""
    from .training import train

    run_dir = args.run_dir or str(Path("runs") / Path(args.config).stem)
    overrides = [*args.overrides, *([f"train.init_from={args.init_from}"] if args.init_from else [])]
    result = train(load_config(args.config, overrides), run_dir=run_dir, resume=args.resume,
                   overwrite=args.overwrite, command=args.command_line)
    return result.exit_status


def _translate_arguments(sub: argparse.ArgumentParser) -> None:
    _decode_arguments(sub, model_folders=True)
    sub.add_argument("-i", "--input", help="source sentences, one per line (default: stdin; .gz accepted)")
    sub.add_argument("-o", "--output", help="where translations go (default: stdout)")


def _run_translate(args: argparse.Namespace) -> None:
    from .translate import translate_command

    translate_command(checkpoint=args.checkpoints, input_path=args.input, output_path=args.output,
                      decode_overrides=_decode_overrides(args), device=args.device,
                      attention_plot=args.attention_plot, model=args.model)


def _evaluate_arguments(sub: argparse.ArgumentParser) -> None:
    _decode_arguments(sub)
    sub.add_argument("--src", required=True, help="source file (.gz accepted)")
    sub.add_argument("--ref", required=True, help="reference translations (.gz accepted)")
    sub.add_argument("-o", "--output", help="also write the translations to this file")
    _bleu_arguments(sub)


def _run_evaluate(args: argparse.Namespace) -> None:
    from .evaluate import evaluate_command

    evaluate_command(checkpoint=args.checkpoints, src_path=args.src, ref_path=args.ref,
                     decode_overrides=_decode_overrides(args), device=args.device, as_json=args.as_json,
                     tokenize=args.tokenize, lowercase=args.lowercase, attention_plot=args.attention_plot,
                     output_path=args.output)


def _score_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--hyp", required=True, help="system output, one sentence per line (.gz accepted)")
    sub.add_argument("--ref", required=True, help="reference translations (.gz accepted)")
    _bleu_arguments(sub)


def _run_score(args: argparse.Namespace) -> None:
    from .evaluate import score_command

    score_command(hyp_path=args.hyp, ref_path=args.ref, as_json=args.as_json, tokenize=args.tokenize,
                  lowercase=args.lowercase)


def _average_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("inputs", nargs="+", metavar="CHECKPOINT",
                     help="checkpoints of one model and tokenizer; with --last N, the run directory instead")
    sub.add_argument("-o", "--output", required=True, help="where the averaged checkpoint goes")
    sub.add_argument("--last", type=int, metavar="N",
                     help="average the N latest checkpoints the run keeps (RUN_DIR/checkpoints/step-*.pt)")


def _run_average(args: argparse.Namespace) -> None:
    from .averaging import average_command

    average_command(inputs=args.inputs, last=args.last, output=args.output)


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
    from .evaluate import logprob_command

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
    from .inspection import inspect_command

    inspect_command(checkpoint=args.checkpoint, sentences=args.sentences, input_path=args.input,
                    as_json=args.as_json, plot_dir=args.plot, device=args.device)


def _config_show_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("config", nargs="?", help="a config file or shipped name (default: the built-in defaults)")
    sub.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help=SET_HELP)


def _run_config_show(args: argparse.Namespace) -> None:
    from .catalog import describe_config

    print(describe_config(load_config(args.config, args.overrides)), end="")


def _run_config_list(args: argparse.Namespace) -> None:
    from .catalog import config_summary, shipped_configs

    shipped = shipped_configs()
    width = max(map(len, shipped))
    for name, path in shipped.items():
        print(f"{name:<{width}}  {config_summary(path)}")


def _config_arguments_group(sub: argparse.ArgumentParser) -> None:
    actions = sub.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="print the resolved config: every key, its value and its help",
                              description="print the resolved config as YAML, every key with a one-line help")
    _config_show_arguments(show)
    show.set_defaults(handler=_run_config_show)
    listing = actions.add_parser("list", help="list the configs shipped with the package")
    listing.set_defaults(handler=_run_config_list)


def _export_split_arguments(sub: argparse.ArgumentParser) -> None:
    _config_arguments(sub)
    sub.add_argument("--split", choices=["train", "dev", "test"], default="test", help="which split (default test)")
    sub.add_argument("--out", required=True, help="path prefix: writes PREFIX.SRC_LANG and PREFIX.TGT_LANG")


def _run_export_split(args: argparse.Namespace) -> None:
    from .data.corpora import export_split

    src, tgt, count = export_split(load_config(args.config, args.overrides).data, args.split, args.out)
    print(f"wrote {count} pairs to {src} and {tgt}")


def _export_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("checkpoint", help="a checkpoint written by `seq2seq train` (best.pt)")
    sub.add_argument("directory", help="the model folder to write")
    sub.add_argument("--scores", action="append", default=[], metavar="JSON",
                     help="`seq2seq evaluate --json` output to list in the model card (repeatable)")
    sub.add_argument("--overwrite", action="store_true", help="replace a non-empty DIRECTORY")
    sub.add_argument("--push-to-hub", metavar="REPO", help="then upload the folder to this Hugging Face Hub repo")
    sub.add_argument("--private", action="store_true", help="create the hub repository as private")


def _run_export(args: argparse.Namespace) -> None:
    from .hub import export_model, push_to_hub, read_scores

    directory = export_model(args.checkpoint, args.directory, scores=read_scores(args.scores),
                             overwrite=args.overwrite)
    print(f"wrote the model folder {directory}")
    if args.push_to_hub:
        print(f"uploaded to {push_to_hub(directory, args.push_to_hub, private=args.private)}")


_COMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], None],
                      Callable[[argparse.Namespace], int | None]]] = [
    ("prepare", "train or load the tokenizer, encode the corpus, print statistics", _prepare_arguments,
     _run_prepare),
    ("train", "train a model end to end", _train_arguments, _run_train),
    ("translate", "translate sentences with a checkpoint or an exported model folder", _translate_arguments,
     _run_translate),
    ("evaluate", "translate a test set and score it (BLEU, chrF, TER)", _evaluate_arguments, _run_evaluate),
    ("score", "score existing translations against references", _score_arguments, _run_score),
    ("average", "average the weights of checkpoints of one model into a new checkpoint", _average_arguments,
     _run_average),
    ("logprob", "forced decoding: the log-probability a model gives given translations (not BLEU)",
     _logprob_arguments, _run_logprob),
    ("config", "show the resolved config with help for every key, or list the shipped configs",
     _config_arguments_group, _run_config_list),
    ("export-split", "write one split of a config's corpus as two aligned text files", _export_split_arguments,
     _run_export_split),
    ("export", "write a checkpoint as a shareable model folder (safetensors, config, tokenizer, model card)",
     _export_arguments, _run_export),
    ("inspect", "show the context vector, attention and GRU gates of a model on a sentence", _inspect_arguments,
     _run_inspect),
]
