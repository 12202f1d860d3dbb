"""Encode/decode speed of every feature codec on real EfficientNet-Lite0 features.

Features of the first --images images at --cut (one message per image, as the edge sends them);
calibrated codecs are fitted on the last --calib-images images. Reports MB/s (of float32 feature
bytes), ms/image, bytes/image, and ratios against plain zstd (``f32-zstd``) and against the head's
own compute time (torch fp32, batch 1). Writes benchmarks/results/codec.json.

    .venv/bin/python benchmarks/bench_codec.py [--cut blocks.3] [--images 64]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Tuple

import numpy as np
import torch
from common import machine

from edgecloud.codec import CodecCalibration, FeatureCodec, parse_spec
from edgecloud.datasets import ImageFolder, make_loader
from edgecloud.models import load_model
from edgecloud.partition import split

BASELINE = "f32-zstd"
CODECS = [
    "raw",
    BASELINE,
    "f32-lz4",
    "f16-zstd",
    "q8-ncc-zstd",
    "q8-ncc-zlib",
    "q8-ncc-lz4",
    "q4-ncc-zstd",
    "q8-ct-png",
    "q8-ct-webp",
    "q6-ct-webp90",
    "q8-ct-jpeg90",
    "q4-ccd-rans",
    "q2-ncc-rans",
    "q4-ncc-rans-s2.5-pt",
    "q4-ncc-crans-s2.5-pt",
    "q8-ct-h264-qp44",
    "q8-ct-av1-crf59",
    "q8-ct-av1-crf53",
    "q8-ct-av1-crf50",
]
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "imagenet-samples"


def _features(head, dataset) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for images, _, _ in make_loader(dataset, batch_size=32, workers=2):
            out.append(head(images).numpy())
    return np.concatenate(out)


def _head_ms(head, image: torch.Tensor, repeats: int) -> Tuple[float, float]:
    """(median, min) ms of the head on one image, single-threaded like the codec."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 OpenMP threads thrash on a shared 2-core machine
    times = []
    with torch.inference_mode():
        head(image)
        for _ in range(repeats):
            start = time.perf_counter()
            head(image)
            times.append(time.perf_counter() - start)
    torch.set_num_threads(threads)
    return 1e3 * statistics.median(times), 1e3 * min(times)


def bench(codec: FeatureCodec, feats: np.ndarray, repeats: int) -> dict:
    enc, dec, sizes = [], [], []
    for _ in range(repeats):
        for feature in feats:
            t0 = time.perf_counter()
            data = codec.encode(feature)
            t1 = time.perf_counter()
            codec.decode(data)
            dec.append(time.perf_counter() - t1)
            enc.append(t1 - t0)
            sizes.append(len(data))
    raw_mb = feats[0].nbytes / 1e6
    enc_ms, dec_ms = 1e3 * statistics.median(enc), 1e3 * statistics.median(dec)
    return {
        "codec": codec.name,
        "encode_ms": enc_ms,
        "decode_ms": dec_ms,
        "encode_mb_per_s": raw_mb / (enc_ms / 1e3),
        "decode_mb_per_s": raw_mb / (dec_ms / 1e3),
        "bytes_per_image": float(np.mean(sizes)),
        "bits_per_element": 8.0 * float(np.mean(sizes)) / feats[0].size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cut", default="blocks")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--calib-images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--codecs", default=",".join(CODECS))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "codec.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)

    model = load_model("efficientnet_lite0")
    head, _ = split(model, args.cut)
    total = len(ImageFolder(DATA, model.preprocessing).files)
    feats = _features(head, ImageFolder(DATA, model.preprocessing, limit=args.images))
    calib = _features(
        head,
        ImageFolder(
            DATA, model.preprocessing, limit=args.calib_images, offset=total - args.calib_images
        ),
    )
    one = ImageFolder(DATA, model.preprocessing, limit=1)[0][0][None]
    head_ms, head_ms_min = _head_ms(head, one, repeats=20)

    results = []
    for spec in args.codecs.split(","):
        parsed = parse_spec(spec)
        cal = CodecCalibration.fit(calib, parsed) if parsed.needs_calibration else None
        row = bench(FeatureCodec(parsed, cal), feats, args.repeats)
        row["codec_ms_over_head_ms"] = (row["encode_ms"] + row["decode_ms"]) / head_ms
        results.append(row)
        print(
            f"{row['codec']:22s} enc {row['encode_ms']:7.3f} ms "
            f"({row['encode_mb_per_s']:6.1f} MB/s)"
            f"  dec {row['decode_ms']:7.3f} ms ({row['decode_mb_per_s']:7.1f} MB/s)"
            f"  {row['bytes_per_image']:8.0f} B  {row['bits_per_element']:6.3f} bit/el"
            f"  (enc+dec)/head {row['codec_ms_over_head_ms']:.3f}",
            flush=True,
        )
    base = next(r for r in results if r["codec"] == BASELINE)
    for row in results:
        row["encode_speed_vs_zstd"] = row["encode_mb_per_s"] / base["encode_mb_per_s"]
        row["decode_speed_vs_zstd"] = row["decode_mb_per_s"] / base["decode_mb_per_s"]
        row["size_vs_zstd"] = row["bytes_per_image"] / base["bytes_per_image"]
    report = {
        "benchmark": "codec",
        "model": model.name,
        "cut": args.cut,
        "feature_shape": list(feats.shape[1:]),
        "images": len(feats),
        "calib_images": len(calib),
        "repeats": args.repeats,
        "head_ms": head_ms,
        "head_ms_min": head_ms_min,
        "head_backend": "torch fp32 eager, batch 1, 1 thread (median of 20)",
        "codec_timing": "median over images x repeats, one message per image, 1 thread",
        "baseline": BASELINE,
        "machine": machine(),
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"head {head_ms:.2f} ms/image (min {head_ms_min:.2f}); wrote {args.out}")


if __name__ == "__main__":
    main()
