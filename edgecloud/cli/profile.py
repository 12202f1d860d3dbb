"""``edgecloud profile MODEL``: what each cut point costs."""

from __future__ import annotations

import argparse

from edgecloud.cli.common import add_output_options, format_table, write_json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "profile",
        help="per-cut feature size, MACs, parameters and head latency",
        description="For every cut point: feature shape and element count, bytes at fp32/int8, "
        "head and tail MACs, head and tail parameters, and the head's measured latency "
        "(torch fp32, batch 1, median) on this machine.",
    )
    parser.add_argument("model", help="registered model name (see `edgecloud models`)")
    parser.add_argument(
        "--weights", default=None, help="weights file or 'random' (costs do not depend on it)"
    )
    parser.add_argument(
        "--cuts", default=None, help="comma-separated cut names (default: all cut points)"
    )
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per cut (default 5)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    add_output_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from edgecloud.models import load_model
    from edgecloud.models.registry import weights_for_structure
    from edgecloud.partition import get_cut
    from edgecloud.partition.profile import profile_cuts

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = load_model(args.model, args.weights or weights_for_structure(args.model))
    cuts = [get_cut(spec, name.strip()) for name in args.cuts.split(",")] if args.cuts else None
    profiles = profile_cuts(spec, cuts, repeat=args.repeat)
    rows = [p.as_dict() for p in profiles]
    for row in rows:
        row["head_mmacs"] = row["head_macs"] / 1e6
        row["tail_mmacs"] = row["tail_macs"] / 1e6
        row["kb_fp32"] = row["bytes_fp32"] / 1024
        row["kb_int8"] = row["bytes_int8"] / 1024
    print(
        format_table(
            rows,
            [
                "cut",
                "shape",
                "elements",
                "kb_fp32",
                "kb_int8",
                "head_mmacs",
                "tail_mmacs",
                "head_params",
                "tail_params",
                "head_ms",
            ],
        )
    )
    print(
        f"\n{spec.name}: {len(rows)} cut points; head_ms measured with torch fp32, batch 1, "
        f"{torch.get_num_threads()} threads"
    )
    write_json(
        args.json_path,
        {
            "model": spec.name,
            "threads": torch.get_num_threads(),
            "cuts": [p.as_dict() for p in profiles],
        },
    )
    return 0
