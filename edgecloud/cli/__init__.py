"""``edgecloud <command>``: one sub-module per command, each with ``register(subparsers)``.

Options come from :mod:`edgecloud.cli.options` (one vocabulary for all commands). Errors a
user can cause end the command with one line on stderr and a non-zero exit status; a
traceback is printed only with ``-v``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from typing import List, Optional

from edgecloud import __version__
from edgecloud.cli.options import VOCABULARY, add_verbosity
from edgecloud.errors import EdgecloudError

# Command modules under edgecloud.cli; each defines register(subparsers) which adds a parser
# whose default ``func`` takes the parsed arguments and returns an exit code.
COMMAND_MODULES = [
    "demo",
    "models",
    "cuts",
    "profile",
    "eval",
    "sweep",
    "plan",
    "train_codec",
    "calibrate",
    "build",
    "serve",
    "export_triton",
    "edge",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgecloud",
        description="Edge/cloud split inference: run a network's head on the edge, send the "
        "compressed feature over ZeroMQ, run the tail in the cloud. Every command takes the "
        "same option names (docs/cli.md); `edgecloud COMMAND --help` explains each.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"edgecloud {__version__}",
        help=VOCABULARY["--version"],
    )
    add_verbosity(parser)
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in COMMAND_MODULES:
        importlib.import_module(f"edgecloud.cli.{name}").register(sub)
    return parser


def configure_logging(verbose: bool, quiet: bool) -> None:
    """edgecloud's own INFO lines (DEBUG with -v, WARNING with -q); libraries only warn."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.getLogger("edgecloud").setLevel(level)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except EdgecloudError as exc:
        print(f"edgecloud {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # commands that write as they go say so themselves
        print(
            f"edgecloud {args.command}: interrupted; nothing was written (results are written "
            "when the command finishes)",
            file=sys.stderr,
        )
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`
        sys.stderr.close()
        return 0
    except Exception as exc:  # a bug, or an error of a library we did not anticipate
        if args.verbose:
            traceback.print_exc()
        print(
            f"edgecloud {args.command}: unexpected error: {type(exc).__name__}: {exc}"
            + ("" if args.verbose else " (run with -v for the traceback)"),
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
