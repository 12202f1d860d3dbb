"""``edgecloud models``: list the registered models."""

from __future__ import annotations

import argparse

from edgecloud.cli.common import add_output_options, write_json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list registered models",
        description="List the model names accepted by --model, with where their weights come from.",
    )
    add_output_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edgecloud.models import describe_models

    models = describe_models()
    for name, description in models.items():
        print(f"{name:22s} {description}")
    write_json(args.json_path, [{"model": k, "description": v} for k, v in models.items()])
    return 0
