"""``edgecloud build``: build (once per device) and cache the TensorRT engine of a head."""

from __future__ import annotations

import argparse
from typing import Any

from edgecloud.cli.common import write_json
from edgecloud.cli.options import (
    add_command,
    add_cut,
    add_int8_calibration,
    add_model,
    add_outputs,
    model_name,
    nonnegative_int,
    positive_int,
)

EPILOG = """\
Run this on the device that will run the engine (a Jetson): engines are tied to the TensorRT
version and the GPU. Engines are cached under engines/<model>/<cut>/<key>.engine, keyed by
sha256(ONNX) + TensorRT version + GPU name/compute capability + precision + batch profile +
DLA core; a second run with the same settings loads the cached engine.

examples:
  edgecloud build --cut blocks.4 --int8                     # explicit INT8 from head_qdq.onnx
  edgecloud build --cut blocks.4 --int8 --fp16              # + FP16 for unquantized layers
  edgecloud build --cut blocks.4 --int8 --implicit --dla-core 0   # DLA, calibration cache
  edgecloud build --cut blocks --int8 --codec-calibration codecs/lite0_blocks_a.npz
      # head + a learned codec's encoder as one engine (what `edgecloud edge --backend
      # tensorrt --codec learned-lite0_blocks_a --codec-calibration ...` loads)
"""


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "build",
        help="build and cache the TensorRT engine of a head (needs TensorRT + PyCUDA + GPU)",
        description="Build a TensorRT engine for the head at --cut from the calibrated QDQ ONNX "
        "(--int8), or from the fp32 ONNX (fp32/--fp16), with an optimization profile for "
        "batch sizes 1..--max-batch, a timing cache and optionally a DLA core with GPU fallback.",
        epilog=EPILOG,
    )
    add_model(parser)
    add_cut(parser)
    parser.add_argument("--int8", action="store_true", help="INT8 engine from a calibration")
    add_int8_calibration(parser)
    parser.add_argument(
        "--implicit",
        action="store_true",
        help="implicit INT8: fp32 ONNX + calibration cache (for the DLA) instead of QDQ",
    )
    parser.add_argument(
        "--codec-calibration",
        default=None,
        metavar="FILE",
        help="a learned codec (.npz from train-codec): its encoder joins the head's engine",
    )
    parser.add_argument("--fp16", action="store_true", help="allow FP16 kernels")
    parser.add_argument("--device", default=None, help="cuda[:N] (default) or dla:K")
    parser.add_argument(
        "--dla-core", type=nonnegative_int, default=None, help="DLA core, GPU fallback on"
    )
    parser.add_argument(
        "--max-batch", type=positive_int, default=8, help="profile max batch (default 8)"
    )
    parser.add_argument(
        "--opt-batch", type=positive_int, default=1, help="profile opt batch (default 1)"
    )
    parser.add_argument("--engine-dir", default="engines", help="engine cache (default engines)")
    parser.add_argument(
        "--workspace-mb", type=positive_int, default=1024, help="workspace (default 1024)"
    )
    parser.add_argument("--rebuild", action="store_true", help="ignore a cached engine")
    parser.add_argument(
        "--runs",
        type=nonnegative_int,
        default=50,
        help="timed batch-1 runs after the build, median reported (default 50)",
    )
    add_outputs(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from edgecloud.backends import create_head_runner
    from edgecloud.models import load_model
    from edgecloud.partition import resolve_cut

    spec = load_model(model_name(args), args.weights)
    cut = resolve_cut(spec, args.cut)
    encoder = None
    if args.codec_calibration:
        from edgecloud.codec import LearnedCodec, load_calibration_file
        from edgecloud.errors import ConfigError

        encoder = load_calibration_file(args.codec_calibration)
        if not isinstance(encoder, LearnedCodec):
            raise ConfigError(
                f"--codec-calibration {args.codec_calibration} is a codec calibration; build "
                "takes a learned codec (its encoder runs in the engine)"
            )
    start = time.perf_counter()
    runner = create_head_runner(
        "tensorrt",
        spec,
        cut,
        int8=args.int8,
        calibration=args.int8_calibration,
        device=args.device,
        fp16=args.fp16,
        implicit_int8=args.implicit,
        dla_core=args.dla_core,
        max_batch=args.max_batch,
        opt_batch=args.opt_batch,
        engine_dir=args.engine_dir,
        workspace_mb=args.workspace_mb,
        rebuild=args.rebuild,
        encoder=encoder,
    )
    summary = {**runner.describe(), "build_s": round(time.perf_counter() - start, 2)}
    if args.runs:
        batch = np.random.default_rng(0).standard_normal((1, *runner.input_shape), np.float32)
        runner.run(batch)
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            runner.run(batch)
            times.append((time.perf_counter() - t0) * 1000)
        summary["head_ms"] = round(float(np.median(times)), 3)
    runner.close()
    for key, value in summary.items():
        print(f"{key:>20}: {value}")
    write_json(args.json_path, summary)
    return 0
