"""Commands that prepare data and train: prepare, train, config (show, list), export-split."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import load_config
from .common import Command, SET_HELP, config_arguments


def _prepare_arguments(sub: argparse.ArgumentParser) -> None:
    config_arguments(sub)


def _run_prepare(args: argparse.Namespace) -> None:
    from ..data import prepare

    prepare(load_config(args.config, args.overrides))


def _train_arguments(sub: argparse.ArgumentParser) -> None:
    config_arguments(sub)
    sub.add_argument("--run-dir", help="where checkpoints, the config and the log go (default: runs/<config name>)")
    sub.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last.pt")
    sub.add_argument("--overwrite", action="store_true", help="discard a run already in --run-dir")
    sub.add_argument("--init-from", metavar="CHECKPOINT",
                     help="fine-tune: start from this checkpoint's weights and tokenizer, with a fresh optimizer, "
                          "schedule and step count (sets train.init_from)")


def _run_train(args: argparse.Namespace) -> int:
    """Exit status 0 for a finished run; 130 / 143 for one a SIGINT / SIGTERM stopped (after saving last.pt)."""
    from ..training import train

    run_dir = args.run_dir or str(Path("runs") / Path(args.config).stem)
    overrides = [*args.overrides, *([f"train.init_from={args.init_from}"] if args.init_from else [])]
    result = train(load_config(args.config, overrides), run_dir=run_dir, resume=args.resume,
                   overwrite=args.overwrite, command=args.command_line)
    return result.exit_status


def _config_show_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("config", nargs="?", help="a config file or shipped name (default: the built-in defaults)")
    sub.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help=SET_HELP)


def _run_config_show(args: argparse.Namespace) -> None:
    from ..catalog import describe_config

    print(describe_config(load_config(args.config, args.overrides)), end="")


def _run_config_list(args: argparse.Namespace) -> None:
    from ..catalog import config_summary, shipped_configs

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
    config_arguments(sub)
    sub.add_argument("--split", choices=["train", "dev", "test"], default="test", help="which split (default test)")
    sub.add_argument("--out", required=True, help="path prefix: writes PREFIX.SRC_LANG and PREFIX.TGT_LANG")


def _run_export_split(args: argparse.Namespace) -> None:
    from ..data.corpora import export_split

    src, tgt, count = export_split(load_config(args.config, args.overrides).data, args.split, args.out)
    print(f"wrote {count} pairs to {src} and {tgt}")


COMMANDS: list[Command] = [
    ("prepare", "train or load the tokenizer, encode the corpus, print statistics", _prepare_arguments, _run_prepare),
    ("train", "train a model end to end", _train_arguments, _run_train),
    ("config", "show the resolved config with help for every key, or list the shipped configs", _config_arguments_group, _run_config_list),
    ("export-split", "write one split of a config's corpus as two aligned text files", _export_split_arguments, _run_export_split),
]
