"""``edgecloud train-codec``: train a learned bottleneck codec at a cut by distillation."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from edgecloud.cli.common import write_json
from edgecloud.cli.options import (
    add_command,
    add_cut,
    add_data,
    add_model,
    add_outputs,
    add_progress,
    add_threads,
    positive_float,
    positive_int,
)

EPILOG = """\
writes to --out (default codecs/<model>/<cut>/):
  NAME.npz             the learned codec: configuration, weights, entropy tables, sha256
  NAME.log.json        loss, KL, feature MSE and rate every 25 steps
  NAME-training.png    the same as a plot
  NAME.checkpoint.pt   while training (every 200 steps; --resume continues from it)

then use the spec learned-NAME everywhere, with the file:
  edgecloud sweep --cut blocks --codec learned-NAME --codec-calibration codecs/.../NAME.npz \\
      --limit 400                      # evaluation images disjoint from the training ones
  edgecloud serve --codec-calibration codecs/.../NAME.npz
  edgecloud edge --codec learned-NAME --codec-calibration codecs/.../NAME.npz ...

example (about 6 minutes on 2 CPU cores; see docs/codec.md for what it reaches):
  edgecloud train-codec --cut blocks.3 --name lite0_b3 --beta 20 --lambda 2 --latent 48 \\
      --steps 1200 --batch-size 16 --views 2
"""


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "train-codec",
        help="train a learned bottleneck codec (encoder, entropy model, decoder) at a cut",
        description="Train an edge-side encoder, a CompressAI entropy bottleneck and a "
        "cloud-side decoder at a cut by distillation from the frozen model: no labels, the "
        "loss is the KL divergence of the tail's output to the uncompressed model's, plus "
        "feature MSE, plus --lambda times the rate. Training images are the LAST "
        "--train-images of --data, each seen as --views augmented crops (random resized "
        "crop, flip, colour jitter); evaluate on the first ones (`sweep --limit`).",
        epilog=EPILOG,
    )
    add_model(parser)
    add_cut(parser)
    add_data(parser)
    parser.add_argument(
        "--name", required=True, help="the codec's name: lowercase letters, digits, _ and ."
    )
    parser.add_argument(
        "--lambda",
        dest="lmbda",
        type=positive_float,
        default=0.05,
        help="weight of the rate in bits/element (default 0.05; larger: fewer bytes)",
    )
    parser.add_argument(
        "--beta",
        type=positive_float,
        default=1.0,
        help="weight of the normalised feature MSE (default 1.0; it keeps the codec from "
        "memorising the training images' answers)",
    )
    parser.add_argument(
        "--latent", type=positive_int, default=24, help="channels coded (default 24)"
    )
    parser.add_argument(
        "--stride",
        type=int,
        choices=(1, 2),
        default=1,
        help="2: code a map of half the height and width (default 1)",
    )
    parser.add_argument(
        "--steps", type=positive_int, default=2000, help="optimisation steps (default 2000)"
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=32, help="features per step (default 32)"
    )
    parser.add_argument(
        "--train-images",
        type=positive_int,
        default=400,
        help="train on the LAST N images of --data (default 400)",
    )
    parser.add_argument(
        "--views", type=positive_int, default=4, help="augmented crops per image (default 4)"
    )
    parser.add_argument("--out", default=None, help="output folder (default codecs/<model>/<cut>)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from NAME.checkpoint.pt in --out (same settings)",
    )
    add_threads(parser, "training")
    add_progress(parser)
    add_outputs(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch
    from tqdm import tqdm

    from edgecloud.cli.options import model_name
    from edgecloud.codec.learned import NAME_RE
    from edgecloud.errors import ConfigError
    from edgecloud.experiments.train_codec import TrainConfig, checkpoint_path, train_codec
    from edgecloud.models import load_model
    from edgecloud.partition import resolve_cut

    if not NAME_RE.match(args.name):
        raise ConfigError(f"--name {args.name!r} must match {NAME_RE.pattern}")
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = load_model(model_name(args), args.weights)
    cut = resolve_cut(spec, args.cut)
    out = Path(args.out) if args.out else Path("codecs") / spec.name / cut
    checkpoint = checkpoint_path(out, args.name)
    if checkpoint.is_file() and not args.resume:
        raise ConfigError(f"{checkpoint} exists: add --resume to continue it, or delete it")
    config = TrainConfig(
        name=args.name,
        cut=cut,
        lmbda=args.lmbda,
        beta=args.beta,
        latent=args.latent,
        stride=args.stride,
        steps=args.steps,
        batch_size=args.batch_size,
        train_images=args.train_images,
        views=args.views,
    )
    bars: dict = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            unit = "image" if stage == "features" else "step"
            bars[stage] = tqdm(
                total=total, unit=unit, desc=stage, disable=args.no_progress, file=sys.stderr
            )
        bar = bars[stage]
        bar.update(done - bar.n)

    try:
        result = train_codec(spec, args.data, config, out, progress, resume=args.resume)
    finally:
        for bar in bars.values():
            bar.close()
    final = result.log[-1] if result.log else {}
    summary = {
        "codec": result.codec.spec,
        "file": str(result.path),
        "sha256": result.codec.hash,
        "model": spec.name,
        "cut": cut,
        "train_images": config.train_images,
        "train_seconds": round(result.seconds, 1),
        "final_kl": round(final.get("kl", float("nan")), 4),
        "final_bits_per_element": round(final.get("bits_per_element", float("nan")), 4),
    }
    for key, value in summary.items():
        print(f"{key:>24}: {value}")
    write_json(args.json_path, summary)
    return 0
