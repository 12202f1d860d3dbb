"""Daemon throughput with 1, 4 and 16 edge clients, dynamic batching on versus off.

The daemon (`edgecloud serve`, real EfficientNet-Lite0 tail after the cut) runs in a child
process; the clients are threads of this process, each with its own DEALER connection and a
window of 2 requests in flight, sending real q8-ncc-zstd features of the shared ImageNet
images (the heads run once, before timing). Batching off is ``--max-batch-size 1``.

    .venv/bin/python benchmarks/bench_daemon.py        # writes benchmarks/results/daemon.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from edgecloud.cloud.process import DaemonProcess
from edgecloud.codec import FeatureCodec
from edgecloud.datasets import ImageFolder
from edgecloud.models import load_model
from edgecloud.partition import split
from edgecloud.transport import FeatureClient, Request

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_transport import cpu_name  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "imagenet-samples"


def start_daemon(cut: str, max_batch: int, delay_ms: float) -> DaemonProcess:
    daemon = DaemonProcess(
        ["--bind", "tcp://127.0.0.1:0", "--cut", cut, "--max-batch-size", str(max_batch),
         "--max-queue-delay-ms", str(delay_ms), "--queue-size", "1024"]
    )  # fmt: skip
    daemon.start()
    return daemon


def run_clients(
    endpoint: str, spec, cut: str, payloads: List[bytes], clients: int, per_client: int
) -> Dict[str, float]:
    latencies: List[float] = []
    batch_sizes: List[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def edge(k: int) -> None:
        with FeatureClient(endpoint, window=2, timeout_s=120, retries=0) as client:
            barrier.wait()
            futures = []
            for i in range(per_client):
                request = Request(
                    model=spec.name, weights_id=spec.weights_id, cut=cut, codec="q8-ncc-zstd"
                )
                futures.append(client.submit(request, payloads[(k + i) % len(payloads)]))
            replies = [f.result() for f in futures]
        assert all(r.ok for r in replies), [r.message for r in replies if not r.ok][:1]
        with lock:
            latencies.extend(r.timings["rtt_ms"] for r in replies)
            batch_sizes.extend(int(r.timings["batch_size"]) for r in replies)

    threads = [threading.Thread(target=edge, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    total = clients * per_client
    return {
        "requests": total,
        "images_per_s": round(total / elapsed, 2),
        "rtt_p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "rtt_p99_ms": round(float(np.percentile(latencies, 99)), 2),
        "mean_batch_size": round(float(np.mean(batch_sizes)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cut", default="blocks.4")
    parser.add_argument("--requests", type=int, default=128, help="requests per configuration")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-queue-delay-ms", type=float, default=5.0)
    parser.add_argument("--json", default=str(RESULTS / "daemon.json"))
    args = parser.parse_args()

    spec = load_model("efficientnet_lite0")
    ds = ImageFolder(DATA, spec.preprocessing, limit=16)
    head, _tail = split(spec, args.cut)
    with torch.inference_mode():
        features = head(torch.stack([ds[i][0] for i in range(len(ds))])).numpy()
    codec = FeatureCodec.from_spec("q8-ncc-zstd")
    payloads = [codec.encode(f) for f in features]

    rows = []
    for batching in (True, False):
        max_batch = args.max_batch_size if batching else 1
        daemon = start_daemon(args.cut, max_batch, args.max_queue_delay_ms)
        try:
            # warm-up: first tail calls are slow
            run_clients(daemon.endpoint, spec, args.cut, payloads, 2, 4)
            for clients in (1, 4, 16):
                per_client = max(4, args.requests // clients)
                row = {"clients": clients, "batching": batching, "max_batch_size": max_batch}
                row.update(
                    run_clients(daemon.endpoint, spec, args.cut, payloads, clients, per_client)
                )
                rows.append(row)
                print(json.dumps(row))
        finally:
            daemon.stop(60)
    for row in rows:
        if row["batching"]:
            off = next(r for r in rows if not r["batching"] and r["clients"] == row["clients"])
            row["throughput_ratio_vs_off"] = round(row["images_per_s"] / off["images_per_s"], 3)
    result = {
        "benchmark": "daemon throughput, EfficientNet-Lite0 tail after "
        f"{args.cut}, q8-ncc-zstd features, window 2 per client",
        "machine": f"{cpu_name()}, {os.cpu_count()} cpus, daemon on cpu",
        "max_queue_delay_ms": args.max_queue_delay_ms,
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "results": rows,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
