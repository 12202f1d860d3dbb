"""``edgecloud <command>``: one sub-module per command, each with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional

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
    "calibrate",
    "build",
    "serve",
    "edge",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgecloud",
        description="Edge/cloud split inference: run a network's head on the edge, send the "
        "compressed feature over ZeroMQ, run the tail in the cloud.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"edgecloud.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"edgecloud.cli.{name}":
                continue  # command not built in this version
            raise
        module.register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except EdgecloudError as exc:
        print(f"edgecloud {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
