"""What resending unsure frames costs on a real link: bytes and round trips, against the
recommended codec alone.

``edgecloud serve --cut blocks`` and an edge process run in a network namespace whose loopback
is shaped by a token bucket (:class:`edgecloud.experiments.shaped_link.ShapedLink`, the rate
changed mid-run). For each rate the edge sends ``--frames`` shared images, one in flight,
with each configuration: ``q4-ncc-crans-s2.5-pt`` alone (the recommended codec),
``q4-ncc-crans-s3.5-pt`` alone, and ``--refine`` (s3.5 first, s2.5 again when the top-1 score
exceeds the second by less than 0.05; both shipped presets). Per configuration: bytes per
frame, the share of frames resent, and the round trip per frame (both round trips for a
resent frame; head and encode excluded), p50 / p90 / mean. Writes JSON.

    python benchmarks/bench_refine.py          # -> benchmarks/results/refine_link.json
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List

import numpy as np
from common import DATA, RESULTS, ask_at_rates, machine, shaped_daemon, write_result

CUT = "blocks"
COARSE, FINE, BELOW = "q4-ncc-crans-s3.5-pt", "q4-ncc-crans-s2.5-pt", 0.05
CONFIGS = {"s2.5": (FINE, False), "s3.5": (COARSE, False), "s3.5 -> s2.5 @0.05": (COARSE, True)}


def edge_worker(daemon: str, frames: int) -> None:
    """Reads a configuration name per line on stdin; answers one JSON line per configuration:
    (bytes, round trip ms, resent) per frame."""
    import torch

    from edgecloud.edge import EdgeClient, RefineConfig, iter_frames
    from edgecloud.models import load_model

    torch.set_num_threads(1)
    spec = load_model("efficientnet_lite0")
    pictures = [image for _, image in iter_frames(str(DATA), limit=frames)]
    clients = {}
    for name, (codec, refine) in CONFIGS.items():
        clients[name] = EdgeClient(
            daemon,
            spec=spec,
            cut=CUT,
            codec=codec,
            window=1,
            refine=RefineConfig(FINE, BELOW) if refine else None,
        )
        clients[name].connect()
        clients[name].warm_up()
        clients[name].predict(pictures[0])  # connection and first-call costs
    print("READY", flush=True)
    for line in sys.stdin:
        client = clients[line.strip()]
        results = [client.predict(image) for image in pictures]
        records = [(r.bytes_sent, r.timings["rtt_ms"], r.refined) for r in results]
        print(json.dumps(records), flush=True)


def summary(records: List[List[Any]]) -> Dict[str, float]:
    size = np.array([r[0] for r in records], dtype=np.float64)
    rtt = np.array([r[1] for r in records], dtype=np.float64)
    return {
        "bytes_per_frame": round(float(size.mean()), 1),
        "resent": round(float(np.mean([r[2] for r in records])), 4),
        "rtt_p50_ms": round(float(np.median(rtt)), 2),
        "rtt_p90_ms": round(float(np.percentile(rtt, 90)), 2),
        "rtt_mean_ms": round(float(rtt.mean()), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="1,4,20", help="Mbit/s, comma-separated")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--json", default=str(RESULTS / "refine_link.json"))
    parser.add_argument("--edge-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.edge_worker:
        edge_worker(args.edge_worker, args.frames)
        return
    rates = [float(r) for r in args.rates.split(",")]

    def show(rate: float, name: str, records: Any) -> None:
        print(f"{rate:g} Mbit/s  {name:20s} {summary(records)}", flush=True)

    serve = ["--bind", "tcp://127.0.0.1:0", "--cut", CUT, "--threads", "1",
             "--decode-workers", "0", "--stats-interval", "3600"]  # fmt: skip
    with shaped_daemon(rates[0], serve) as (link, endpoint):
        worker = [sys.executable, __file__, "--edge-worker", endpoint, "--frames", str(args.frames)]
        answers = ask_at_rates(link, worker, rates, list(CONFIGS), show)
    results = {
        rate: {name: summary(records) for name, records in rows.items()}
        for rate, rows in answers.items()
    }
    write_result(
        args.json,
        {
            "benchmark": "bench_refine",
            "machine": machine(),
            "cut": CUT,
            "frames": args.frames,
            "configs": {
                k: {"codec": c, "refine": FINE if r else None, "below": BELOW if r else None}
                for k, (c, r) in CONFIGS.items()
            },  # fmt: skip
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
