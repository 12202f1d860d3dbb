"""Command-line options that select a head backend, shared by ``eval``, ``build`` and others."""

from __future__ import annotations

import argparse
from typing import Optional

from edgecloud.backends.base import HeadRunner


def add_backend_options(parser: argparse.ArgumentParser, *, calibration: bool = True) -> None:
    """``--backend``, ``--int8``, ``--calibration`` (optional), ``--device``, ``--threads``."""
    parser.add_argument(
        "--backend",
        default="torch",
        choices=["torch", "onnxruntime", "tensorrt"],
        help="head backend (default torch)",
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        help="run the INT8 head of a calibration (onnxruntime/tensorrt; see `edgecloud calibrate`)",
    )
    if calibration:
        parser.add_argument(
            "--calibration",
            default=None,
            help="INT8 calibration directory (default calibration/<model>/<cut>)",
        )
    parser.add_argument(
        "--device", default=None, help="head device: cpu, cuda[:N], dla:K (default per backend)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for the head (default: runtime's)"
    )


def runner_from_args(
    args: argparse.Namespace, spec, cut: str, calibration: Optional[str] = None, **options
) -> HeadRunner:
    """The head runner the options in ``args`` ask for."""
    from edgecloud.backends import create_head_runner

    return create_head_runner(
        args.backend,
        spec,
        cut,
        int8=args.int8,
        calibration=calibration or getattr(args, "calibration", None),
        device=args.device,
        threads=args.threads,
        **options,
    )
