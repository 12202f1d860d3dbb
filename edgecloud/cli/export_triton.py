"""``edgecloud export-triton``: a Triton model repository for the tails a daemon serves."""

from __future__ import annotations

import argparse
import sys
from typing import Any, List

from edgecloud.cli.common import Column, format_table, write_json
from edgecloud.cli.options import (
    add_command,
    add_cut,
    add_model,
    add_outputs,
    model_name,
    nonnegative_float,
    positive_int,
)

EPILOG = """\
examples:
  edgecloud export-triton --out models/                    # the default model's served cuts
  edgecloud export-triton --cut blocks --instance-kind gpu --instances 2 --tensorrt
  tritonserver --model-repository=models/                  # then, on the Triton machine
  edgecloud serve --executor triton --triton-url TRITON:8001

Each tail becomes models/<model>__<cut>__<weights>/ with 1/model.onnx (checked against torch
in ONNX Runtime), config.pbtxt (Triton's ModelConfig: ONNX Runtime backend, dynamic batching
with preferred sizes and a max queue delay, instance groups, optional TensorRT acceleration)
and edgecloud.json (the ONNX file's sha256). The name carries the weights id, so a daemon with
other weights finds no model there and says so instead of computing wrong answers.
"""


def register(subparsers: Any) -> None:
    p = add_command(
        subparsers,
        "export-triton",
        help="write a Triton model repository for the tails (ONNX + config.pbtxt)",
        description="Export the tails a daemon serves as a Triton Inference Server model "
        "repository, for `edgecloud serve --executor triton`.",
        epilog=EPILOG,
    )
    add_model(p)
    add_cut(p, many=True, help="cuts whose tails to export (default: the model's served cuts)")
    p.add_argument("--out", default="triton-models", help="repository folder (default %(default)s)")
    p.add_argument(
        "--max-batch-size",
        type=positive_int,
        default=64,
        help="Triton's max_batch_size (default %(default)s)",
    )
    p.add_argument(
        "--preferred-batch-sizes",
        type=_sizes,
        default=(8, 16, 32),
        help="comma-separated batch sizes Triton's dynamic batcher prefers (default 8,16,32)",
    )
    p.add_argument(
        "--max-queue-delay-ms",
        type=nonnegative_float,
        default=2.0,
        help="how long Triton's batcher may hold a request for more (default %(default)s)",
    )
    p.add_argument(
        "--instances",
        type=positive_int,
        default=1,
        help="model instances (Triton's instance_group count; default 1)",
    )
    p.add_argument(
        "--instance-kind",
        choices=["auto", "cpu", "gpu"],
        default="auto",
        help="where the instances run (default auto: GPUs if Triton has them)",
    )
    p.add_argument(
        "--tensorrt",
        action="store_true",
        help="ask ONNX Runtime's TensorRT execution provider (FP16) on GPU instances",
    )
    p.add_argument("--overwrite", action="store_true", help="replace models already in --out")
    add_outputs(p)
    p.set_defaults(func=run)


def _sizes(text: str) -> tuple:
    try:
        sizes = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated integers, got {text!r}"
        ) from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive, got {text!r}")
    return sizes


def run(args: argparse.Namespace) -> int:
    from edgecloud.cloud.triton.repository import TritonModelOptions, export_tail
    from edgecloud.models import load_model
    from edgecloud.partition import default_cut

    options = TritonModelOptions(
        max_batch_size=args.max_batch_size,
        preferred_batch_sizes=args.preferred_batch_sizes,
        max_queue_delay_us=int(round(args.max_queue_delay_ms * 1000)),
        instances=args.instances,
        kind=args.instance_kind,
        tensorrt=args.tensorrt,
    ).validate()
    spec = load_model(model_name(args), weights=args.weights)
    cuts: List[str] = args.cuts or (spec.record.serve_cuts() if spec.record else [])
    rows: List[dict] = []
    for cut in cuts or [default_cut(spec)]:
        try:
            folder = export_tail(spec, cut, args.out, options, overwrite=args.overwrite)
        except KeyboardInterrupt:  # models already exported stay; the interrupted one is gone
            done = ", ".join(row["triton_model"] for row in rows) or "none"
            print(f"edgecloud export-triton: interrupted; exported before: {done}", file=sys.stderr)
            return 130
        rows.append(
            {"model": spec.name, "cut": cut, "triton_model": folder.name, "path": str(folder)}
        )
    print(
        format_table(
            rows,
            [
                Column("model"),
                Column("cut"),
                Column("triton_model", "Triton model"),
                Column("path"),
            ],
        )
    )
    write_json(args.json_path, rows)
    return 0
