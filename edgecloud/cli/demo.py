"""``edgecloud demo``: the whole edge -> cloud path on real photos, with zero configuration."""

from __future__ import annotations

import argparse
import io
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Tuple

from edgecloud.cli.options import (
    add_codec,
    add_command,
    add_cut,
    add_data,
    add_limit,
    add_model,
    add_outputs,
    model_name,
    quality,
)
from edgecloud.errors import EdgecloudError

if TYPE_CHECKING:
    from edgecloud.cloud.process import DaemonProcess

DEMO_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "stereo_motorcycle")


def register(subparsers: Any) -> None:
    p = add_command(
        subparsers,
        "demo",
        help="run the edge and a local cloud daemon on sample photos (no setup needed)",
        description="Start `edgecloud serve` on a free loopback port in a child process, run "
        "the edge runtime on scikit-image's sample photos (or --data DIR), print each "
        "prediction, the bytes sent against the JPEG of the same image and the latency "
        "breakdown, then stop the daemon.",
    )
    add_model(p)
    add_cut(p)
    add_codec(
        p,
        help="feature codec (default: the model's recommended codec at the cut, "
        "calibrated by a shipped preset)",
    )
    add_data(
        p, default=None, old=["--images"], help="image folder to use instead of the sample photos"
    )
    add_limit(p, default=8)
    p.add_argument(
        "--jpeg-quality", type=quality, default=90, help="quality of the JPEG baseline (default 90)"
    )
    add_outputs(p)
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
    from edgecloud.models import model_record

    record = model_record(model_name(args))
    args.cut = args.cut or record.default_cut
    args.codec = args.codec or record.codec_for(args.cut)
    daemon = DaemonProcess(
        [
            "--bind",
            "tcp://127.0.0.1:0",
            "--model",
            record.name,
            "--cut",
            args.cut,
            "--stats-interval",
            "3600",
        ],
        verbose=getattr(args, "verbose", False),
    )
    try:
        return _run(args, daemon)
    finally:
        daemon.stop()


def _run(args: argparse.Namespace, daemon: DaemonProcess) -> int:
    import torch

    from edgecloud.cli.common import Column, format_table, write_json
    from edgecloud.edge import EdgeClient, iter_frames
    from edgecloud.models import load_model

    spec = load_model(model_name(args))  # loads while the daemon starts
    frames = list(iter_frames(args.data, args.limit)) if args.data else list(sample_photos())
    endpoint = daemon.start()
    print(f"cloud daemon listening on {endpoint} (child process {daemon.pid})")
    rows: List[Dict[str, Any]] = []
    with EdgeClient(endpoint, spec=spec, cut=args.cut, codec=args.codec, timeout_s=30) as edge:
        edge.connect()
        edge.warm_up()
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
        f"\nmodel {spec.name}, cut {args.cut}, codec {args.codec}; sent = the feature "
        f"bitstream; JPEG = the same 224x224 crop as JPEG q{args.jpeg_quality}\n"
    )
    for row in rows:
        row["same"] = "yes" if row["same_as_local"] else "no"
    print(
        format_table(
            rows,
            [
                Column("image"),
                Column("prediction", "cloud answer"),
                Column("score", format="score"),
                Column("same", "= local"),
                Column("local_prediction", "local full model"),
                Column("local_score", "score", "score"),
                Column("bytes", "sent B", "int"),
                Column("jpeg_bytes", "JPEG B", "int"),
                Column("jpeg_ratio", "JPEG / sent", "ratio"),
            ],
        )
    )
    print("\nlatency (ms; one request per image, after a warm-up)\n")
    stages = ["preprocess_ms", "head_ms", "encode_ms", "rtt_ms", "decode_ms", "queue_ms", "tail_ms"]
    print(format_table(rows, [Column("image")] + [Column(s, s[:-3], "ms") for s in stages]))
    agree = sum(r["same_as_local"] for r in rows)
    print(
        f"\n{agree}/{len(rows)} cloud answers equal the local full model's; a lossy codec may "
        "change answers the model is unsure of (a low local score). rtt includes the cloud's "
        "decode, queue and tail time."
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
