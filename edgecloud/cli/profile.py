"""``edgecloud profile [MODEL]``: what each cut point costs."""

from __future__ import annotations

import argparse
from typing import Any

from edgecloud.cli.common import Column, format_table, write_json
from edgecloud.cli.options import (
    add_command,
    add_cut,
    add_head,
    add_model,
    add_outputs,
    add_progress,
    positive_int,
)


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "profile",
        help="per-cut feature size, MACs, parameters, head and tail latency",
        description="For every cut point (or --cut ...): feature shape and element count, KB at "
        "fp32/int8, head and tail MACs and parameters, and the latency of the head, of the tail "
        "and of the whole model measured on this machine (torch fp32, batch 1, median of "
        "--repeat runs after one warm-up run; the head with --backend/--int8 in the runtime "
        "the edge will use, e.g. the INT8 ONNX Runtime or TensorRT engine). `edgecloud plan` "
        "reads its --json: the edge's for the heads, the cloud's for the tails.",
    )
    add_model(parser, positional=True)
    add_cut(parser, many=True, help="cut points to profile (default: all)")
    parser.add_argument(
        "--repeat", type=positive_int, default=5, help="timed runs per cut (default 5)"
    )
    add_head(parser)
    add_progress(parser)
    add_outputs(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from edgecloud.cli.options import model_name
    from edgecloud.models import load_model
    from edgecloud.models.registry import weights_for_structure
    from edgecloud.partition import get_cut
    from edgecloud.partition.profile import model_ms, profile_cuts

    if args.threads:
        torch.set_num_threads(args.threads)
    name = model_name(args)
    spec = load_model(name, args.weights or weights_for_structure(name))
    cuts = [get_cut(spec, cut) for cut in args.cuts] if args.cuts else None
    profiles = profile_cuts(spec, cuts, repeat=args.repeat, progress=not args.no_progress)
    rows = [p.as_dict() for p in profiles]
    backend = "torch fp32"
    if args.backend != "torch" or args.int8:  # the head in the edge's own runtime
        from edgecloud.cli.options import head_runner
        from edgecloud.partition.profile import median_ms

        backend = f"{args.backend} {'int8' if args.int8 else 'fp32'}"
        x = np.zeros((1, *spec.input_shape), dtype=np.float32)
        for row in rows:
            runner = head_runner(args, spec, row["cut"])
            row["head_ms"] = median_ms(lambda runner=runner: runner.run(x), args.repeat)
    whole_ms = model_ms(spec, repeat=args.repeat)
    print(
        format_table(
            rows,
            [
                Column("cut"),
                Column("shape"),
                Column("elements", format="int"),
                Column("bytes_fp32", "KB fp32", "kb"),
                Column("bytes_int8", "KB int8", "kb"),
                Column("head_macs", "head MACs", "int"),
                Column("tail_macs", "tail MACs", "int"),
                Column("head_params", "head params", "int"),
                Column("tail_params", "tail params", "int"),
                Column("head_ms", "head ms (median)", "ms"),
                Column("tail_ms", "tail ms (median)", "ms"),
            ],
        )
    )
    print(
        f"\n{spec.name}: {len(rows)} cut points; whole model {whole_ms:.2f} ms; times: batch 1, "
        f"median of {args.repeat} runs after a warm-up, {torch.get_num_threads()} threads; "
        f"heads: {backend}, tails and whole model: torch fp32"
    )
    write_json(
        args.json_path,
        {"model": spec.name, "threads": torch.get_num_threads(), "repeat": args.repeat,
         "head_backend": backend, "model_ms": whole_ms, "cuts": rows},
    )  # fmt: skip
    return 0
