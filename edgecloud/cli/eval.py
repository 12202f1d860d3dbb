"""``edgecloud eval``: top-1/top-5 of a model (whole, split, or with an INT8 head) on images."""

from __future__ import annotations

import argparse
from typing import Any

from edgecloud.cli.common import write_json
from edgecloud.cli.options import (
    add_command,
    add_cut,
    add_data,
    add_head,
    add_limit,
    add_loader,
    add_model,
    add_offset,
    add_outputs,
    add_progress,
    head_runner,
)

EPILOG = """\
examples:
  edgecloud eval                                             # whole model, shared samples
  edgecloud eval --cut blocks.3 --limit 200                  # head + tail (== the full model)
  edgecloud eval --cut blocks --backend onnxruntime --int8   # INT8 head from `edgecloud calibrate`
"""


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "eval",
        help="top-1/top-5 accuracy and images/s on an image folder",
        description="Evaluate a model on an image folder with labels.csv. With --cut the model "
        "runs as head + tail (the same result as the full model in fp32); with --backend "
        "onnxruntime/tensorrt (and --int8) the head runs there and the tail in torch.",
        epilog=EPILOG,
    )
    add_model(parser)
    add_cut(parser, help="run as head + tail split here (default: the whole model; with "
            "another backend or --int8: the model's default cut)")  # fmt: skip
    add_data(parser)
    add_limit(parser)
    add_offset(parser)
    add_loader(parser)
    add_head(parser)
    add_progress(parser)
    add_outputs(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edgecloud.datasets import ImageFolder, make_loader
    from edgecloud.experiments.evaluate import evaluate
    from edgecloud.models import load_model
    from edgecloud.partition import resolve_cut, split

    spec = load_model(args.model or _default_model(), args.weights)
    dataset = ImageFolder(args.data, spec.preprocessing, limit=args.limit, offset=args.offset)
    predict = spec.module
    head_desc = "whole model, torch fp32"
    cut = args.cut
    if args.backend != "torch" or args.int8:  # head on another backend, tail in torch
        import torch

        cut = resolve_cut(spec, cut)
        _, tail = split(spec, cut)
        runner = head_runner(args, spec, cut)
        head_desc = f"head {args.backend} {runner.precision.upper()}, tail torch fp32"

        def predict(images):
            return tail(torch.from_numpy(runner.run(images.numpy())))

    elif cut:
        cut = resolve_cut(spec, cut)
        head, tail = split(spec, cut)
        head_desc = "head + tail, torch fp32"

        def predict(images):
            return tail(head(images))

    loader = make_loader(dataset, args.batch_size, args.data_workers, args.on_bad_image)
    result = evaluate(predict, loader, progress=not args.no_progress)
    summary = {
        "model": spec.name,
        "cut": cut or "",
        "backend": args.backend,
        "int8": args.int8,
        "offset": args.offset,
        **result.summary(),
        "skipped_images": len(dataset.skipped),
    }
    where = f" cut {cut}" if cut else ""
    print(
        f"{spec.name}{where} ({head_desc}): top-1 {100 * result.top1:.2f} %  "
        f"top-5 {100 * result.top5:.2f} %  on {result.images} images"
        + (f" from {dataset.files[0].name}" if args.offset else "")
        + (f" ({len(dataset.skipped)} unreadable, skipped)" if dataset.skipped else "")
        + f"; {result.images_per_s:.1f} images/s (model compute only, batch {args.batch_size})"
    )
    write_json(args.json_path, summary)
    return 0


def _default_model() -> str:
    from edgecloud.models.record import DEFAULT_MODEL

    return DEFAULT_MODEL
