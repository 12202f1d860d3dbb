"""The daemon's tail executors in one run: torch and ONNX Runtime in the daemon, a real Triton.

``edgecloud serve`` runs in a child process with ``--executor torch`` and ``--executor
onnxruntime`` in alternating rounds (``--rounds``), then with ``--executor triton`` (unless
``--no-triton``) against a local Triton (PyTriton's ``tritonserver``, the tail exported by
``edgecloud export-triton`` and run by ONNX Runtime in Triton's Python backend; needs
``EDGECLOUD_TRITON_PYTHON``, see edgecloud/cloud/triton/local.py). The same client processes
(bench_daemon's: raw DEALERs, ``--inflight`` requests each) send real features of the shared
images. Reports images/s, round trips, the daemon's mean batch and Triton's own batching
(requests per execution, from its metrics). Writes JSON.

    python benchmarks/bench_executors.py                     # 16 clients x 4 in flight, CPU
    python benchmarks/bench_executors.py --device cuda       # the torch tail on the GPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

from bench_daemon import CUT, drive
from common import RESULTS, machine, real_features, write_result

CODEC = "q8-ncc-zstd"  # cheap to decode: the executor is what differs


def run(args: argparse.Namespace, frames, serve: List[str], triton: Any = None) -> Dict[str, Any]:
    from edgecloud.cloud.metrics import sample_value
    from edgecloud.cloud.process import DaemonProcess
    from edgecloud.transport import FeatureClient, Request

    daemon = DaemonProcess(["--bind", "tcp://127.0.0.1:0", "--cut", CUT, "--stats-interval",
                            "3600", "--max-inflight-per-client", "64", *serve])  # fmt: skip
    endpoint = daemon.start()
    try:
        drive(endpoint, frames, 1, 4, 2.0)  # warm-up
        before = triton.metrics() if triton else ""
        result = drive(endpoint, frames, args.clients, args.inflight, args.seconds)
        with FeatureClient(endpoint) as client:
            stats = client.request(Request(kind="stats")).info
        if triton:
            after = triton.metrics()
            done, runs = (
                sample_value(after, name) - sample_value(before, name)
                for name in ("nv_inference_request_success", "nv_inference_exec_count")
            )
            result["triton_requests_per_execution"] = round(done / max(1.0, runs), 2)
    finally:
        daemon.stop(60)
    result["mean_batch_size"] = stats.get("mean_batch_size")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16, help="client processes")
    parser.add_argument("--inflight", type=int, default=4, help="requests in flight per client")
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--device", default="cpu", help="of the torch executor")
    parser.add_argument("--threads", type=int, default=1, help="tail threads (torch and ORT)")
    parser.add_argument("--rounds", type=int, default=2, help="torch/onnxruntime rounds")
    parser.add_argument("--no-triton", action="store_true", help="only the in-daemon executors")
    parser.add_argument("--json", default=str(RESULTS / "executors.json"))
    args = parser.parse_args()

    from edgecloud.cli import main as cli
    from edgecloud.cloud.triton.local import LocalTriton
    from edgecloud.codec import FeatureCodec
    from edgecloud.transport import Request, pack_request

    spec, features, _top1 = real_features(CUT, images=16)
    codec = FeatureCodec.from_spec(CODEC)
    template = Request(model=spec.name, weights_id=spec.weights_id, cut=CUT, codec=CODEC, id="@ID@")
    frames = [pack_request(template, codec.encode(f)) for f in features]
    common = ["--threads", str(args.threads), "--decode-workers", "1"]
    rows: List[Dict[str, Any]] = []

    def record(executor: str, row: Dict[str, Any], workers: Optional[int] = None) -> None:
        row.update(executor=executor, tail_threads=workers or 1, codec=CODEC, cut=CUT)
        rows.append(row)
        print(json.dumps(row), flush=True)

    for _ in range(args.rounds):  # alternating: fair under drifting background load
        for executor in ("torch", "onnxruntime"):
            serve = [*common, "--device", args.device, "--executor", executor]
            record(executor, run(args, frames, serve))
    if not args.no_triton:
        with tempfile.TemporaryDirectory() as tmp:
            repository = Path(tmp) / "models"
            assert cli(["export-triton", "--cut", CUT, "--out", str(repository), "-q"]) == 0
            with LocalTriton(repository, threads=args.threads) as triton:
                for workers in (1, 4):  # 4 tail threads: several Triton requests at once
                    serve = [*common, "--executor", "triton", "--triton-url", triton.grpc_url,
                             "--workers", str(workers)]  # fmt: skip
                    record("triton", run(args, frames, serve, triton), workers)
    rows_done(args, rows)


def rows_done(args: argparse.Namespace, rows: List[Dict[str, Any]]) -> None:
    """Ratios to the torch executor's median rate, then the JSON."""
    torch_rate = statistics.median(r["images_per_s"] for r in rows if r["executor"] == "torch")
    for row in rows:
        row["throughput_vs_torch"] = round(row["images_per_s"] / torch_rate, 2)
    write_result(args.json, {"machine": machine(), "settings": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
