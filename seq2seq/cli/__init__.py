"""The `seq2seq` command: each subcommand parses its arguments and calls one function of the package.

Each handler imports its command's module when it runs, so that `seq2seq --help` and argument
errors answer at once instead of paying for torch first.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from .. import __version__
from ..errors import Seq2SeqError
from ..logs import setup_logging
from . import decoding, models, training
from .common import Command

COMMANDS: list[Command] = [*training.COMMANDS, *decoding.COMMANDS, *models.COMMANDS]


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
    for name, helptext, add_arguments, handler in COMMANDS:
        sub = commands.add_parser(name, help=helptext, description=helptext)
        add_arguments(sub)
        sub.set_defaults(handler=handler)
    return parser
