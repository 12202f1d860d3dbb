"""``edgecloud plan``: which split to deploy at which bandwidth."""

from __future__ import annotations

import argparse
from typing import Any, Dict, List

from edgecloud.cli.common import Column, format_table, write_json
from edgecloud.cli.options import (
    add_command,
    add_outputs,
    nonnegative_float,
    percent,
    positive_float,
    positive_floats,
)

EPILOG = """\
example (the edge's and the cloud's profiles, a sweep, a floor of 1 point of top-1):
  edgecloud profile --cut blocks.3,blocks --json edge.json        # on the edge
  edgecloud profile --cut blocks.3,blocks --json cloud.json       # on the cloud
  edgecloud plan --profile edge.json --cloud-profile cloud.json \\
      --sweep docs/results-sweep.json --max-drop 1 --json plan.json --plot plan.png
"""


def register(subparsers: Any) -> None:
    from edgecloud.experiments.plan import DEFAULT_BANDWIDTHS

    parser = add_command(
        subparsers,
        "plan",
        help="choose edge-only, cloud-only or a cut and codec for a link's bandwidth",
        description="Plan a deployment: for every link rate, the candidate with the lowest "
        "expected end-to-end latency (edge ms + bytes on the wire / bandwidth + rtt + cloud "
        "ms) that meets the accuracy floor (--min-fidelity, --max-drop), or, with "
        "--latency-budget-ms or --max-bytes, the most accurate one within the budget. "
        "Candidates: edge-only (the whole model on the edge), cloud-only (the sweep's "
        "jpeg-input-qNN rows: the crop as JPEG, the whole model in the cloud) and every cut x "
        "codec of the sweep. Head latencies come from the edge's profile, tail latencies "
        "from the cloud's, bytes, codec times and accuracy from the sweep.",
        epilog=EPILOG,
    )
    parser.add_argument(
        "--profile",
        required=True,
        metavar="FILE",
        help="`edgecloud profile --json` measured on the edge",
    )
    parser.add_argument(
        "--cloud-profile",
        default=None,
        metavar="FILE",
        help="`edgecloud profile --json` measured on the cloud (default: --profile)",
    )
    parser.add_argument(
        "--sweep", required=True, metavar="FILE", help="`edgecloud sweep --json` output"
    )
    parser.add_argument(
        "--bandwidth",
        type=positive_floats,
        default=list(DEFAULT_BANDWIDTHS),
        metavar="MBITS[,MBITS]",
        help="link rates in Mbit/s (default "
        + ",".join(f"{b:g}" for b in DEFAULT_BANDWIDTHS)
        + ")",
    )
    parser.add_argument(
        "--rtt-ms",
        type=nonnegative_float,
        default=0.0,
        help="round-trip time added to requests that cross the link (default 0)",
    )
    parser.add_argument(
        "--min-fidelity",
        type=percent,
        default=None,
        metavar="PCT",
        help="accuracy floor: top-1 agreement with the uncompressed model, in %%",
    )
    parser.add_argument(
        "--max-drop",
        type=nonnegative_float,
        default=None,
        metavar="POINTS",
        help="accuracy floor: largest top-1 drop, in points",
    )
    parser.add_argument(
        "--latency-budget-ms",
        type=positive_float,
        default=None,
        help="maximise accuracy among candidates within this latency",
    )
    parser.add_argument(
        "--max-bytes",
        type=positive_float,
        default=None,
        help="maximise accuracy among candidates sending at most this many bytes per image",
    )
    add_outputs(parser, plot=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edgecloud.experiments import plan as planner

    edge = planner.load_profile(args.profile)
    cloud = planner.load_profile(args.cloud_profile) if args.cloud_profile else edge
    candidates = planner.build_candidates(edge, cloud, planner.load_sweep(args.sweep))
    objective = planner.Objective(
        min_fidelity=None if args.min_fidelity is None else args.min_fidelity / 100,
        max_drop=None if args.max_drop is None else args.max_drop / 100,
        latency_budget_ms=args.latency_budget_ms,
        max_bytes=args.max_bytes,
    )
    bandwidths = sorted(args.bandwidth)
    choices = planner.plan(candidates, bandwidths, objective, args.rtt_ms)
    rows = _plan_rows(candidates, choices, objective, args.rtt_ms)
    floors = _objective_text(args)

    print(f"{len(candidates)} candidates of {edge.model}; {floors}; rtt {args.rtt_ms:g} ms")
    print(format_table(rows, PLAN_COLUMNS))
    if len(choices) == 1 and choices[0].candidate is not None:
        print(f"\nchosen: {choices[0].candidate.name}")
    write_json(
        args.json_path,
        {
            "model": edge.model,
            "objective": floors,
            "rtt_ms": args.rtt_ms,
            "bandwidths_mbps": bandwidths,
            "plan": rows,
            "candidates": [
                {
                    **c.as_dict(),
                    "latency_ms": [c.latency_ms(bw, args.rtt_ms) for bw in bandwidths],
                }
                for c in candidates
            ],
        },
    )
    if args.plot:
        from edgecloud.experiments.plots import plot_plan

        print(f"plot: {plot_plan(candidates, choices, objective, args.rtt_ms, args.plot)}")
    return 0


PLAN_COLUMNS = [
    Column("bandwidth_mbps", "Mbit/s", "float"),
    Column("choice"),
    Column("latency_ms", "latency ms", "ms"),
    Column("bytes_per_image", "KB", "kb"),
    Column("fidelity", "fidelity %", "pct"),
    Column("top1_drop", "drop points", "points"),
    Column("edge_only_ms", "edge-only ms", "ms"),
    Column("cloud_only_ms", "cloud-only ms", "ms"),
    Column("cloud_only", "cloud-only codec"),
]


def _objective_text(args: argparse.Namespace) -> str:
    """The objective in words, as printed and in the JSON."""
    parts = []
    if args.min_fidelity is not None:
        parts.append(f"fidelity >= {args.min_fidelity:g} %")
    if args.max_drop is not None:
        parts.append(f"top-1 drop <= {args.max_drop:g} points")
    if args.latency_budget_ms is not None:
        parts.append(f"latency <= {args.latency_budget_ms:g} ms")
    if args.max_bytes is not None:
        parts.append(f"bytes/image <= {args.max_bytes:g}")
    goal = "most accurate" if args.latency_budget_ms or args.max_bytes else "lowest latency"
    return goal + (" with " + ", ".join(parts) if parts else " (no accuracy floor)")


def _plan_rows(candidates, choices, objective, rtt_ms: float) -> List[Dict[str, Any]]:
    from edgecloud.experiments.plan import CLOUD_ONLY, EDGE_ONLY, best_of_kind

    rows = []
    for choice in choices:
        bw, chosen = choice.bandwidth_mbps, choice.candidate
        edge = best_of_kind(candidates, EDGE_ONLY, bw, objective, rtt_ms)
        cloud = best_of_kind(candidates, CLOUD_ONLY, bw, objective, rtt_ms)
        rows.append(
            {
                "bandwidth_mbps": bw,
                "choice": chosen.name if chosen else "none meets the objective",
                "kind": chosen.kind if chosen else None,
                "cut": chosen.cut if chosen else None,
                "codec": chosen.codec if chosen else None,
                "latency_ms": choice.latency_ms,
                "bytes_per_image": chosen.bytes_per_image if chosen else None,
                "fidelity": chosen.fidelity if chosen else None,
                "top1_drop": chosen.top1_drop if chosen else None,
                "edge_only_ms": edge.latency_ms,
                "cloud_only_ms": cloud.latency_ms,
                "cloud_only": cloud.candidate.codec if cloud.candidate else "-",
            }
        )
    return rows
