"""``edgecloud calibrate``: INT8 post-training calibration of a head (QDQ ONNX + caches)."""

from __future__ import annotations

import argparse
from typing import Any

from edgecloud.cli.common import write_json
from edgecloud.cli.options import (
    add_command,
    add_cut,
    add_data,
    add_int8_calibration,
    add_loader,
    add_model,
    add_outputs,
    add_progress,
    nonnegative_int,
    positive_float,
    positive_int,
)

EPILOG = """\
writes to calibration/<model>/<cut>/ (or --int8-calibration DIR):
  head_fp32.onnx       fp32 head (dynamic batch)
  head_qdq.onnx        INT8 QDQ graph for TensorRT (symmetric, zero point 0, per-channel weights)
  head_qdq_cpu.onnx    same scales as a fast ONNX Runtime graph (uint8 activations)
  scales.json          per-tensor activation scales
  calibration.cache    TensorRT calibration cache (implicit INT8, e.g. for the DLA)
  manifest.json        model, weights, cut, method, images, hashes

example:
  edgecloud calibrate --cut blocks.4 --calib-images 64 --method minmax
  edgecloud eval --cut blocks.4 --backend onnxruntime --int8 --limit 736   # disjoint images
"""


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "calibrate",
        help="INT8 calibration of a head: TensorRT-compatible QDQ ONNX + calibration cache",
        description="Run the head over calibration images, choose INT8 scales (min/max, entropy "
        "or percentile) and write a QDQ ONNX that follows TensorRT's explicit-quantization "
        "rules, a fast ONNX Runtime variant, the scales and a TensorRT calibration cache. The "
        "INT8 features are then compared with fp32 on held-out images.",
        epilog=EPILOG,
    )
    add_model(parser)
    add_cut(parser)
    add_data(parser)
    parser.add_argument(
        "--calib-images",
        type=positive_int,
        default=64,
        help="calibrate on the LAST N images of --data (default 64), as `edgecloud sweep` does, "
        "so that evaluating on the first ones (`eval --limit`) uses disjoint images",
    )
    add_loader(parser)
    parser.add_argument(
        "--method",
        default="minmax",
        choices=["minmax", "entropy", "percentile"],
        help="range calibration method (default minmax; entropy/percentile keep histograms of "
        "every activation in memory: use <= 64 images)",
    )
    parser.add_argument(
        "--percentile",
        type=positive_float,
        default=99.99,
        help="percentile method: kept %% (default 99.99)",
    )
    add_int8_calibration(parser, help="output folder (default calibration/<model>/<cut>)")
    parser.add_argument(
        "--verify",
        type=nonnegative_int,
        default=16,
        help="compare INT8 and fp32 features on the N images before the calibration ones "
        "(default 16)",
    )
    add_progress(parser)
    add_outputs(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from edgecloud.backends import create_head_runner
    from edgecloud.cli.options import model_name
    from edgecloud.datasets import ImageFolder
    from edgecloud.errors import DatasetError
    from edgecloud.models import load_model
    from edgecloud.partition import resolve_cut
    from edgecloud.quantize import calibrate

    spec = load_model(model_name(args), args.weights)
    cut = resolve_cut(spec, args.cut)
    dataset = ImageFolder(args.data, spec.preprocessing)
    if not 0 < args.calib_images <= len(dataset):
        raise DatasetError(f"--calib-images must be 1..{len(dataset)} for {args.data}")
    first_calibration = len(dataset) - args.calib_images
    artifacts = calibrate(
        spec,
        cut,
        torch.utils.data.Subset(dataset, range(first_calibration, len(dataset))),
        method=args.method,
        num_images=args.calib_images,
        batch_size=args.batch_size,
        workers=args.data_workers,
        percentile=args.percentile,
        out_dir=args.int8_calibration,
        on_bad_image=args.on_bad_image,
        progress=not args.no_progress,
    )
    summary = {
        "model": spec.name,
        "cut": cut,
        "method": args.method,
        "images": artifacts.manifest["images"],
        "calibration": str(artifacts.directory),
        "activation_tensors": artifacts.manifest["activation_tensors"],
        "seconds": artifacts.manifest["seconds"],
        "skipped_images": len(dataset.skipped),
    }
    summary["calibration_files"] = [
        dataset.files[first_calibration].name,
        dataset.files[-1].name,
    ]
    held_out = range(max(0, first_calibration - args.verify), first_calibration)
    verify = [image for image in (dataset[i][0] for i in held_out) if image is not None]
    if verify:
        batch = torch.stack(verify).numpy()
        ref = create_head_runner("torch", spec, cut).run(batch)
        for graph in ("tensorrt", "cpu"):
            runner = create_head_runner(
                "onnxruntime",
                spec,
                cut,
                int8=True,
                calibration=artifacts.directory,
                int8_graph=graph,
            )
            out = runner.run(batch)
            cosine = float(np.sum(out * ref) / (np.linalg.norm(out) * np.linalg.norm(ref) + 1e-12))
            summary[f"cosine_{graph}_graph"] = round(cosine, 5)
        summary["verify_images"] = len(verify)
    for key, value in summary.items():
        print(f"{key:>24}: {value}")
    write_json(args.json_path, summary)
    return 0
