"""Round-trip time of the transport alone (no model, no codec) for 1 KB / 64 KB / 1 MB payloads.

The far end is a ROUTER echo loop in a separate process that parses each request with the
edgecloud protocol and answers a small reply (as the daemon does). Compared in the same run
against the obvious baseline: bare pyzmq DEALER send/recv of the same bytes to a bare ROUTER
echo (no protocol header, no client I/O thread, no futures).

    .venv/bin/python benchmarks/bench_transport.py   # -> benchmarks/results/transport.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import zmq

from edgecloud.transport import (
    FeatureClient,
    Reply,
    Request,
    SocketOptions,
    bound_endpoint,
    make_router,
    pack_reply,
    unpack_request,
)

SIZES = {"1KB": 1024, "64KB": 64 * 1024, "1MB": 1024 * 1024}
RESULTS = Path(__file__).resolve().parent / "results"


def _echo_server(queue: mp.Queue, protocol: bool) -> None:
    ctx = zmq.Context()
    sock = make_router(ctx, "tcp://127.0.0.1:0", SocketOptions(max_message_bytes=8 << 20))
    queue.put(bound_endpoint(sock))
    while True:
        identity, *frames = sock.recv_multipart(copy=False)
        if frames[0].bytes == b"stop":
            break
        if protocol:
            request, _payload = unpack_request(frames)
            sock.send_multipart([identity, *pack_reply(Reply(id=request.id, labels=["x"]))])
        else:
            sock.send_multipart([identity, b"ok"])
    sock.close(0)
    ctx.term()


def _start(protocol: bool):
    queue: mp.Queue = mp.Queue()
    proc = mp.Process(target=_echo_server, args=(queue, protocol), daemon=True)
    proc.start()
    return proc, queue.get(timeout=30)


def _stop(proc, endpoint: str) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(endpoint)
    sock.send(b"stop")
    proc.join(10)
    sock.close(0)
    ctx.term()


def _stats(samples: List[float], size: int) -> Dict[str, float]:
    arr = np.asarray(samples) * 1000.0
    return {
        "rtt_p50_ms": round(float(np.percentile(arr, 50)), 4),
        "rtt_p99_ms": round(float(np.percentile(arr, 99)), 4),
        "rtt_mean_ms": round(float(arr.mean()), 4),
        "mb_per_s": round(size / 1e6 / (float(arr.mean()) / 1000.0), 2),
    }


def bench_edgecloud(endpoint: str, payload: bytes, n: int) -> List[float]:
    samples = []
    with FeatureClient(endpoint, window=1, timeout_s=30) as client:
        for i in range(n + 10):
            request = Request(model="m", weights_id="w", cut="c", codec="raw")
            t0 = time.perf_counter()
            reply = client.request(request, payload)
            if i >= 10:  # warm-up
                samples.append(time.perf_counter() - t0)
            assert reply.ok
    return samples


def bench_window(endpoint: str, payload: bytes, n: int, window: int) -> float:
    """Requests per second with ``window`` requests in flight."""
    with FeatureClient(endpoint, window=window, timeout_s=30) as client:
        client.request(Request(model="m", weights_id="w", cut="c", codec="raw"), payload)
        t0 = time.perf_counter()
        futures = [
            client.submit(Request(model="m", weights_id="w", cut="c", codec="raw"), payload)
            for _ in range(n)
        ]
        assert all(f.result().ok for f in futures)
        return n / (time.perf_counter() - t0)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bench_bare(endpoint: str, payload: bytes, n: int) -> List[float]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(endpoint)
    samples = []
    for i in range(n + 10):
        t0 = time.perf_counter()
        sock.send_multipart([b"{}", payload], copy=len(payload) < 65536)
        sock.recv_multipart()
        if i >= 10:
            samples.append(time.perf_counter() - t0)
    sock.close(0)
    ctx.term()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="round trips per payload size")
    parser.add_argument("--json", default=str(RESULTS / "transport.json"))
    args = parser.parse_args()
    rows = []
    proto, proto_ep = _start(protocol=True)
    bare, bare_ep = _start(protocol=False)
    try:
        for name, size in SIZES.items():
            payload = os.urandom(size)
            n = args.n if size < (1 << 20) else max(50, args.n // 3)
            ours = _stats(bench_edgecloud(proto_ep, payload, n), size)
            base = _stats(bench_bare(bare_ep, payload, n), size)
            row = {"payload": name, "bytes": size, "round_trips": n}
            row.update({f"edgecloud_{k}": v for k, v in ours.items()})
            row.update({f"bare_zmq_{k}": v for k, v in base.items()})
            row["p50_ratio_vs_bare"] = round(ours["rtt_p50_ms"] / base["rtt_p50_ms"], 3)
            rows.append(row)
            print(json.dumps(row))
        payload = os.urandom(SIZES["64KB"])
        window_rows = []
        for window in (1, 8):
            rate = bench_window(proto_ep, payload, args.n * 2, window)
            window_rows.append(
                {"payload": "64KB", "window": window, "requests_per_s": round(rate, 1)}
            )
            print(json.dumps(window_rows[-1]))
        window_rows[1]["ratio_vs_window_1"] = round(
            window_rows[1]["requests_per_s"] / window_rows[0]["requests_per_s"], 3
        )
    finally:
        _stop(proto, proto_ep)
        _stop(bare, bare_ep)
    result = {
        "benchmark": "transport round trip over tcp loopback (edge DEALER -> ROUTER echo)",
        "machine": f"{cpu_name()}, {os.cpu_count()} cpus",
        "python": platform.python_version(),
        "zmq": zmq.zmq_version(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "results": rows,
        "pipelining": window_rows,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
