"""``edgecloud models``: list the registered models."""

from __future__ import annotations

import argparse
from typing import Any

from edgecloud.cli.common import Column, format_table, write_json
from edgecloud.cli.options import add_command, add_outputs


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "models",
        help="list registered models",
        description="List the model names accepted by --model, where their weights come from, "
        "and the default cut and recommended codec edgecloud uses for each.",
    )
    add_outputs(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edgecloud.models.record import all_records

    rows = []
    for record in all_records():
        cut = record.default_cut or "(middle cut)"
        rows.append(
            {
                "model": record.name,
                "default_cut": cut,
                "codec": record.codec_for(cut),
                "served_cuts": ",".join(record.serve_cuts()) or cut,
                "description": record.description,
            }
        )
    print(
        format_table(
            rows,
            [
                Column("model"),
                Column("default_cut", "default cut"),
                Column("codec", "codec at that cut"),
                Column("served_cuts", "served cuts"),
                Column("description"),
            ],
        )
    )
    write_json(args.json_path, rows)
    return 0
