"""``edgecloud eval``: top-1/top-5 of a model (optionally split, with a codec) on a data set."""

from __future__ import annotations

import argparse

from edgecloud.backends.options import add_backend_options
from edgecloud.cli.common import add_data_options, add_model_options, add_output_options, write_json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="top-1/top-5 accuracy and images/s on an image folder",
        description="Evaluate a model on an image folder with labels.csv. With --cut the model "
        "runs as head + tail (the result is the same as the full model in fp32).",
    )
    add_model_options(parser, cut=True)
    add_data_options(parser)
    add_backend_options(parser)
    add_output_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edgecloud.datasets import ImageFolder, make_loader
    from edgecloud.experiments.evaluate import evaluate
    from edgecloud.models import load_model
    from edgecloud.partition import split

    spec = load_model(args.model, args.weights)
    dataset = ImageFolder(args.data, spec.preprocessing, limit=args.limit)
    predict = spec.module
    if args.cut:
        head, tail = split(spec, args.cut)

        def predict(images):
            return tail(head(images))

    if args.backend != "torch" or args.int8:  # head on another backend, tail in torch
        import torch

        from edgecloud.backends.options import runner_from_args
        from edgecloud.partition import resolve_cut

        args.cut = resolve_cut(spec, args.cut)
        _, tail = split(spec, args.cut)
        runner = runner_from_args(args, spec, args.cut)

        def predict(images):
            return tail(torch.from_numpy(runner.run(images.numpy())))

    result = evaluate(predict, make_loader(dataset, args.batch_size, args.workers))
    summary = {
        "model": spec.name,
        "cut": args.cut or "",
        "backend": args.backend,
        "int8": args.int8,
        **result.summary(),
    }
    print(
        f"{spec.name}{' cut ' + args.cut if args.cut else ''}: top1 {result.top1:.4f}  "
        f"top5 {result.top5:.4f}  on {result.images} images  ({result.images_per_s:.1f} images/s)"
    )
    write_json(args.json_path, summary)
    return 0
