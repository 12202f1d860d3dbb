"""``edgecloud demo``: the whole edge -> cloud path on real photos, with zero configuration."""

from __future__ import annotations

import argparse
import io
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Tuple

from edgecloud.cli.edge import DEFAULT_CODEC, DEFAULT_CUT
from edgecloud.errors import EdgecloudError

if TYPE_CHECKING:
    from edgecloud.cloud.process import DaemonProcess

DEMO_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "stereo_motorcycle")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the edge and a local cloud daemon on sample photos (no setup needed)",
        description="Start `edgecloud serve` on a free loopback port in a child process, run "
        "the edge runtime on scikit-image's sample photos (or --images DIR), print each "
        "prediction, the bytes sent against the JPEG of the same image and the latency "
        "breakdown, then stop the daemon.",
    )
    p.add_argument("--images", default=None, help="image folder to use instead of the samples")
    p.add_argument("--limit", type=int, default=8, help="at most N images from --images (8)")
    p.add_argument(
        "--model", default="efficientnet_lite0", help="model (default efficientnet_lite0)"
    )
    p.add_argument("--cut", default=DEFAULT_CUT, help=f"cut point (default {DEFAULT_CUT})")
    p.add_argument(
        "--codec",
        default=DEFAULT_CODEC,
        help=f"feature codec (default {DEFAULT_CODEC}, calibration from the shipped preset)",
    )
    p.add_argument(
        "--jpeg-quality", type=int, default=90, help="quality of the JPEG baseline (default 90)"
    )
    p.add_argument("--json", dest="json_path", default=None, help="also write the results to PATH")
    p.set_defaults(func=run)


def sample_photos() -> Iterator[Tuple[str, Any]]:
    """Real photographs that ship with scikit-image."""
    import skimage.data
    from PIL import Image

    for name in DEMO_PHOTOS:
        pixels = getattr(skimage.data, name)()
        if isinstance(pixels, tuple):  # stereo pairs: use the left view
            pixels = pixels[0]
        yield name, Image.fromarray(pixels).convert("RGB")


def jpeg_size(spec: Any, image: Any, quality: int) -> int:
    """Bytes of the model-size crop (what the network sees) as a JPEG."""
    buf = io.BytesIO()
    spec.preprocessing.crop_image(image).save(buf, format="JPEG", quality=quality)
    return len(buf.getvalue())


def run(args: argparse.Namespace) -> int:
    from edgecloud.cloud.process import DaemonProcess

    daemon = DaemonProcess(
        ["--bind", "tcp://127.0.0.1:0", "--model", args.model, "--cut", args.cut,
         "--stats-interval", "3600"],
        verbose=getattr(args, "verbose", False),
    )  # fmt: skip
    try:
        return _run(args, daemon)
    finally:
        daemon.stop()


def _run(args: argparse.Namespace, daemon: DaemonProcess) -> int:
    import torch

    from edgecloud.cli.common import format_table, write_json
    from edgecloud.edge import EdgeClient, iter_frames
    from edgecloud.models import load_model

    spec = load_model(args.model)  # loads while the daemon starts
    frames = list(iter_frames(args.images, args.limit)) if args.images else list(sample_photos())
    endpoint = daemon.start()
    print(f"cloud daemon listening on {endpoint} (child process {daemon.pid})")
    rows: List[Dict[str, Any]] = []
    with EdgeClient(endpoint, spec=spec, cut=args.cut, codec=args.codec, timeout_s=30) as edge:
        edge.predict(frames[0][1])  # warm-up: first calls of head and tail are slow
        for result, (_name, image) in zip(edge.stream(frames), frames):
            with torch.inference_mode():
                probs = spec.module(spec.preprocessing(image)[None]).softmax(dim=1)[0]
            local = int(probs.argmax())
            if not result.ok:
                raise EdgecloudError(f"{result.name}: {result.code}: {result.message}")
            jpeg = jpeg_size(spec, image, args.jpeg_quality)
            rows.append(
                {
                    "image": result.name,
                    "prediction": result.labels[0],
                    "score": result.scores[0],
                    "same_as_local": result.indices[0] == local,
                    "local_prediction": spec.labels[local],
                    "local_score": round(float(probs[local]), 4),
                    "bytes": result.bytes_sent,
                    "jpeg_bytes": jpeg,
                    "jpeg_ratio": round(jpeg / result.bytes_sent, 2),
                    **{k: round(v, 1) for k, v in result.timings.items() if k.endswith("_ms")},
                }
            )
    print(
        f"\nmodel {spec.name}, cut {args.cut}, codec {args.codec}; bytes = feature bitstream "
        f"sent; jpeg_bytes = the same 224x224 crop as JPEG q{args.jpeg_quality}\n"
    )
    print(
        format_table(
            rows,
            [
                "image",
                "prediction",
                "score",
                "same_as_local",
                "local_prediction",
                "local_score",
                "bytes",
                "jpeg_bytes",
                "jpeg_ratio",
            ],
        )
    )
    print("\nlatency breakdown (ms)\n")
    stages = ["preprocess_ms", "head_ms", "encode_ms", "rtt_ms", "decode_ms", "queue_ms", "tail_ms"]
    print(format_table(rows, ["image", *stages]))
    agree = sum(r["same_as_local"] for r in rows)
    print(
        f"\n{agree}/{len(rows)} predictions equal the local full model's (local_prediction); "
        "a lossy codec may change answers the model is unsure of (low local_score). "
        "rtt_ms includes the cloud's decode, queue and tail time."
    )
    write_json(
        args.json_path,
        {
            "model": spec.name,
            "cut": args.cut,
            "codec": args.codec,
            "endpoint": endpoint,
            "results": rows,
        },
    )
    return 0
