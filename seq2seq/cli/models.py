"""Commands that make new models from trained ones: average, export."""

from __future__ import annotations

import argparse

from .common import Command


def _average_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("inputs", nargs="+", metavar="CHECKPOINT",
                     help="checkpoints of one model and tokenizer; with --last N, the run directory instead")
    sub.add_argument("-o", "--output", required=True, help="where the averaged checkpoint goes")
    sub.add_argument("--last", type=int, metavar="N",
                     help="average the N latest checkpoints the run keeps (RUN_DIR/checkpoints/step-*.pt)")


def _run_average(args: argparse.Namespace) -> None:
    from ..averaging import average_command

    average_command(inputs=args.inputs, last=args.last, output=args.output)


def _export_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("checkpoint", help="a checkpoint written by `seq2seq train` (best.pt)")
    sub.add_argument("directory", help="the model folder to write")
    sub.add_argument("--scores", action="append", default=[], metavar="JSON",
                     help="`seq2seq evaluate --json` output to list in the model card (repeatable)")
    sub.add_argument("--overwrite", action="store_true", help="replace a non-empty DIRECTORY")
    sub.add_argument("--push-to-hub", metavar="REPO", help="then upload the folder to this Hugging Face Hub repo")
    sub.add_argument("--private", action="store_true", help="create the hub repository as private")


def _run_export(args: argparse.Namespace) -> None:
    from ..hub import export_model, push_to_hub, read_scores

    directory = export_model(args.checkpoint, args.directory, scores=read_scores(args.scores),
                             overwrite=args.overwrite)
    print(f"wrote the model folder {directory}")
    if args.push_to_hub:
        print(f"uploaded to {push_to_hub(directory, args.push_to_hub, private=args.private)}")


COMMANDS: list[Command] = [
    ("average", "average the weights of checkpoints of one model into a new checkpoint", _average_arguments, _run_average),
    ("export", "write a checkpoint as a shareable model folder (safetensors, config, tokenizer, model card)", _export_arguments, _run_export),
]
