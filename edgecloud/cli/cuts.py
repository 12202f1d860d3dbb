"""``edgecloud cuts [MODEL]``: list a model's cut points."""

from __future__ import annotations

import argparse
from typing import Any

from edgecloud.cli.common import Column, format_table, write_json
from edgecloud.cli.options import add_command, add_model, add_outputs, model_name


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "cuts",
        help="list the cut points of a model",
        description="List every point where the model can be cut (exactly one tensor crosses), "
        "with the feature shape per image. The model's default cut (used by every command when "
        "--cut is not given) and the cuts `edgecloud serve` serves are marked. Use the names "
        "with --cut.",
    )
    add_model(parser, positional=True)
    add_outputs(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edgecloud.models import load_model
    from edgecloud.models.registry import weights_for_structure
    from edgecloud.partition import cut_points, default_cut

    name = model_name(args)
    spec = load_model(name, args.weights or weights_for_structure(name))
    default = default_cut(spec)
    served = set(spec.record.serve_cuts()) if spec.record else {default}
    rows = []
    for c in cut_points(spec):
        marks = [
            m for m, on in (("default", c.name == default), ("served", c.name in served)) if on
        ]
        rows.append(
            {
                "index": c.index,
                "cut": c.name,
                "shape": c.shape,
                "elements": c.elements,
                "marks": ", ".join(marks),
                "codec": spec.record.codec_for(c.name) if spec.record and marks else "",
            }
        )
    print(
        format_table(
            rows,
            [
                Column("index", format="int"),
                Column("cut"),
                Column("shape"),
                Column("elements", format="int"),
                Column("marks", ""),
                Column("codec", "recommended codec"),
            ],
        )
    )
    print(f"\n{spec.name}: {len(rows)} cut points; default cut {default}")
    write_json(args.json_path, [{**r, "shape": list(r["shape"])} for r in rows])
    return 0
