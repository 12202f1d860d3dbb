"""``edgecloud cuts MODEL``: list a model's cut points."""

from __future__ import annotations

import argparse

from edgecloud.cli.common import add_output_options, format_table, write_json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "cuts",
        help="list the cut points of a model",
        description="List every point where the model can be cut (exactly one tensor crosses), "
        "with the feature shape per image. Use the names with --cut.",
    )
    parser.add_argument("model", help="registered model name (see `edgecloud models`)")
    parser.add_argument(
        "--weights", default=None, help="weights file or 'random' (shapes do not depend on it)"
    )
    add_output_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edgecloud.models import load_model
    from edgecloud.models.registry import weights_for_structure
    from edgecloud.partition import cut_points, default_cut

    spec = load_model(args.model, args.weights or weights_for_structure(args.model))
    default = default_cut(spec)
    rows = [
        {
            "cut": c.name + (" (default)" if c.name == default else ""),
            "index": c.index,
            "shape": c.shape,
            "elements": c.elements,
        }
        for c in cut_points(spec)
    ]
    print(format_table(rows, ["index", "cut", "shape", "elements"]))
    write_json(args.json_path, [{**r, "cut": r["cut"].split(" ")[0]} for r in rows])
    return 0
