"""Daemon ingest against what the machine can do, in one run.

`edgecloud serve` runs in a child process; every edge client is a *process* (threads of one
process cannot load a daemon) with a raw DEALER and ``--inflight`` requests in flight, sending
real features of the shared ImageNet images. For each codec the same run measures:

- **daemon**: images/s, round-trip p50/p99, mean batch, and the CPU the daemon's process tree
  spent per image (/proc), less what decoding and the tail cost alone: the *overhead* of the
  data plane (parsing, admission, hand-offs, replies); and the CPU per image of each of its
  threads (I/O, tails; from ``stats``);
- **echo**: a bare pyzmq ROUTER that answers each request with a reply of the same size, with
  the same client processes (the transport's ceiling);
- **decode**: every core decoding the same bitstreams (a process pool; and one core alone);
- **tail**: the tail alone at the daemon's mean batch size, on the daemon's device.

``efficiency = daemon / ceiling`` with ``ceiling = 1 / (1/echo + 1/decode_all [+ 1/tail])``
(the tail term when it runs on the CPU, which the other stages share). Writes JSON.

    python benchmarks/bench_daemon.py                      # CPU, 4 clients x 16 in flight
    python benchmarks/bench_daemon.py --device cuda --clients 12 --decode-workers 15
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import zmq
from common import RESULTS, machine, percentiles, real_features, write_result

CUT = "blocks"
CODECS = ["q8-ncc-zstd", "q4-ncc-crans-s2.5-pt"]
REPLY_BYTES = 260  # a top-5 reply header


# -- client processes -------------------------------------------------------------------------


def client(endpoint: str, frames: List[List[bytes]], inflight: int, seconds: float,
           start_at: float, out: mp.Queue) -> None:  # fmt: skip
    """Keep ``inflight`` requests in flight for ``seconds``; report (count, rtts, codes)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    time.sleep(max(0.0, start_at - time.time()))
    sent: Dict[bytes, float] = {}
    rtts: List[float] = []
    codes: Dict[str, int] = {}
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        while len(sent) < inflight:
            header, payload = frames[n % len(frames)]
            rid = b"%d-%d" % (os.getpid(), n)
            n += 1
            sock.send_multipart([header.replace(b"@ID@", rid), payload], copy=False)
            sent[rid] = time.perf_counter()
        if sock.poll(100):
            reply = sock.recv_multipart()
            head = json.loads(reply[0])
            rid = head["id"].encode()
            if rid in sent:
                rtts.append((time.perf_counter() - sent.pop(rid)) * 1000.0)
                codes[head.get("code", "ok")] = codes.get(head.get("code", "ok"), 0) + 1
    deadline = time.perf_counter() + 30
    while sent and time.perf_counter() < deadline:  # collect what is still in flight
        if sock.poll(100):
            head = json.loads(sock.recv_multipart()[0])
            if sent.pop(head["id"].encode(), None) is not None:
                codes[head.get("code", "ok")] = codes.get(head.get("code", "ok"), 0) + 1
    ctx.destroy(linger=0)
    out.put((len(rtts), rtts, codes))


def drive(endpoint: str, frames, clients: int, inflight: int, seconds: float) -> Dict[str, Any]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 2.0  # all clients start together, after their imports
    procs = [
        ctx.Process(target=client, args=(endpoint, frames, inflight, seconds, start_at, out))
        for _ in range(clients)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join(30)
    done = sum(r[0] for r in results)
    rtts = [x for r in results for x in r[1]]
    codes: Dict[str, int] = {}
    for r in results:
        for code, count in r[2].items():
            codes[code] = codes.get(code, 0) + count
    return {
        "answered": done,
        "images_per_s": round(done / seconds, 1),
        "codes": codes,
        **percentiles(rtts, "rtt"),
    }


# -- the ceilings -------------------------------------------------------------------------------


def echo_server(endpoint_queue: mp.Queue, reply_bytes: int) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    endpoint_queue.put(f"tcp://127.0.0.1:{port}")
    filler = b" " * reply_bytes
    while True:
        frames = sock.recv_multipart(copy=False)
        header = bytes(frames[1].buffer)
        rid = header[header.index(b'"id":"') + 6 :].split(b'"', 1)[0]
        sock.send_multipart(
            [frames[0], b'{"id":"' + rid + b'","code":"ok","pad":"' + filler + b'"}']
        )


def echo_ceiling(frames, clients: int, inflight: int, seconds: float) -> float:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    server = ctx.Process(target=echo_server, args=(q, REPLY_BYTES), daemon=True)
    server.start()
    try:
        result = drive(q.get(timeout=60), frames, clients, inflight, seconds)
    finally:
        server.kill()
    return result["images_per_s"]


def _decode_some(args) -> float:
    payloads, shape, seconds = args
    from edgecloud.cloud.decode import decode_batch
    from edgecloud.presets import preset_calibrations

    cals = preset_calibrations()
    decode_batch(payloads[:4], shape, cals)  # warm up (compile, tables)
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        decode_batch(payloads, shape, cals)
        n += len(payloads)
    return n / seconds


def decode_ceiling(payloads: Sequence[bytes], shape, workers: int, seconds: float) -> float:
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers) as pool:
        return float(sum(pool.map(_decode_some, [(list(payloads), shape, seconds)] * workers)))


def tail_ceiling(spec, args, batch: int) -> float:
    """Images/s of the tail alone at ``batch``, in the daemon's executor (torch or ONNX
    Runtime), device, precision and threads."""
    import torch

    from edgecloud.cloud.executors import make_executor
    from edgecloud.cloud.tails import TailRegistry

    torch.set_num_threads(args.threads)
    registry = TailRegistry(args.device)
    entry = registry.add(spec, CUT)
    executor = make_executor(
        args.executor, registry.device, precision=args.precision, threads=args.threads
    )
    x = np.random.default_rng(0).random((batch, *entry.shape), dtype=np.float32)
    for _ in range(5):
        executor.run(entry, x)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < 3.0:
        executor.run(entry, x)
        n += batch
    return n / (time.perf_counter() - start)


# -- the daemon ---------------------------------------------------------------------------------


def tree_cpu_seconds(pid: int) -> Dict[str, float]:
    """User + system CPU seconds of a process (``daemon``) and of its living children
    (``children``: the decode workers), from /proc."""
    from edgecloud.cloud.stats import cpu_seconds

    def cpu(p: int) -> float:
        return cpu_seconds(f"/proc/{p}/stat") or 0.0

    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(p) for p in children.read_text().split()] if children.exists() else []
    return {"daemon": cpu(pid), "children": sum(cpu(p) for p in kids)}


def run_daemon(args, frames, codec: str, decode_workers: Optional[int]) -> Dict[str, Any]:
    from edgecloud.cloud.process import DaemonProcess

    serve = ["--bind", "tcp://127.0.0.1:0", "--cut", CUT, "--threads", str(args.threads),
             "--device", args.device, "--max-batch-size", str(args.max_batch_size),
             "--max-queue-delay-ms", str(args.max_queue_delay_ms), "--stats-interval", "3600",
             "--max-inflight-per-client", str(max(64, args.inflight)),
             "--precision", args.precision, "--executor", args.executor]  # fmt: skip
    if decode_workers is not None:
        serve += ["--decode-workers", str(decode_workers)]
    if args.wait_when_idle:
        serve += ["--wait-when-idle"]
    daemon = DaemonProcess(serve)
    endpoint = daemon.start()
    try:
        from edgecloud.transport import FeatureClient, Request

        drive(endpoint, frames, 1, 4, 2.0)  # warm-up
        with FeatureClient(endpoint) as c:
            threads0 = c.request(Request(kind="stats")).info.get("thread_cpu_s", {})
        cpu0 = tree_cpu_seconds(daemon.pid)
        result = drive(endpoint, frames, args.clients, args.inflight, args.seconds)
        cpu1 = tree_cpu_seconds(daemon.pid)
        with FeatureClient(endpoint) as c:
            stats = c.request(Request(kind="stats")).info
    finally:
        daemon.stop(60)
    per_image = 1e6 / max(1, result["answered"])
    own, workers = (cpu1[k] - cpu0[k] for k in ("daemon", "children"))
    result.update(
        codec=codec,
        decode_workers=decode_workers,
        daemon_cpu_s=round(own + workers, 3),
        daemon_cpu_us_per_image=round((own + workers) * per_image, 1),
        daemon_process_cpu_us_per_image=round(own * per_image, 1),
        decode_workers_cpu_us_per_image=round(workers * per_image, 1),
        mean_batch_size=stats.get("mean_batch_size"),
        # which of the daemon's threads spends the CPU (the I/O thread holds the GIL longest)
        thread_cpu_us_per_image={
            role: round((seconds - threads0.get(role, 0.0)) * per_image, 1)
            for role, seconds in stats.get("thread_cpu_s", {}).items()
        },
        daemon_stats=stats,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codec", action="append", help=f"codec (repeatable; default {CODECS})")
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--inflight", type=int, default=16, help="requests in flight per client")
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    parser.add_argument(
        "--executor", default="torch", choices=["torch", "onnxruntime"], help="tail executor"
    )
    parser.add_argument("--threads", type=int, default=1, help="tail threads (torch)")
    parser.add_argument(
        "--decode-workers",
        type=int,
        action="append",
        help="decode worker processes to try (repeatable; default 1 and 2)",
    )
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-queue-delay-ms", type=float, default=2.0)
    parser.add_argument(
        "--wait-when-idle", action="store_true", help="the daemon's --wait-when-idle (old rule)"
    )
    parser.add_argument("--json", default=str(RESULTS / "daemon.json"))
    args = parser.parse_args()

    from edgecloud.codec import FeatureCodec
    from edgecloud.edge.client import preset_for
    from edgecloud.transport import Request, pack_request

    spec, features, _top1 = real_features(CUT, images=16)
    rows = []
    for codec_name in args.codec or CODECS:
        codec = FeatureCodec.from_spec(codec_name, preset_for(spec, CUT, codec_name))
        payloads = [codec.encode(f) for f in features]
        template = Request(model=spec.name, weights_id=spec.weights_id, cut=CUT,
                           codec=codec_name, id="@ID@")  # fmt: skip
        frames = [pack_request(template, p) for p in payloads]
        echo = echo_ceiling(frames, args.clients, args.inflight, args.seconds)
        cores = os.cpu_count() or 1
        decode_all = decode_ceiling(payloads, features.shape[1:], cores, args.seconds / 2)
        decode_one = decode_ceiling(payloads, features.shape[1:], 1, args.seconds / 2)
        for workers in args.decode_workers or [1, 2]:
            row = run_daemon(args, frames, codec_name, workers)
            batch = max(1, int(round(row["mean_batch_size"] or 1)))
            tail = tail_ceiling(spec, args, batch)
            on_cpu = args.device == "cpu"
            ceiling = 1.0 / (1.0 / echo + 1.0 / decode_all + (1.0 / tail if on_cpu else 0.0))
            overhead = row["daemon_cpu_us_per_image"] - 1e6 / decode_one
            if on_cpu:
                overhead -= 1e6 / tail * args.threads
            row.update(
                payload_bytes=int(statistics.mean(len(p) for p in payloads)),
                echo_images_per_s=round(echo, 1),
                decode_one_core_images_per_s=round(decode_one, 1),
                decode_all_cores_images_per_s=round(decode_all, 1),
                tail_images_per_s_at_mean_batch=round(tail, 1),
                ceiling_images_per_s=round(ceiling, 1),
                efficiency=round(row["images_per_s"] / ceiling, 3),
                overhead_cpu_us_per_image=round(overhead, 1),
            )
            rows.append(row)
            print(json.dumps(row), flush=True)
    by = {(r["codec"], r["decode_workers"]): r for r in rows}
    for codec_name in args.codec or CODECS:
        one, two = by.get((codec_name, 1)), by.get((codec_name, 2))
        if one and two:
            two["throughput_vs_1_decode_worker"] = round(
                two["images_per_s"] / one["images_per_s"], 2
            )
    write_result(args.json, {
        "benchmark": "bench_daemon",
        "machine": machine(),
        "cut": CUT,
        "device": args.device,
        "precision": args.precision,
        "clients": args.clients,
        "inflight_per_client": args.inflight,
        "tail_threads": args.threads,
        "max_batch_size": args.max_batch_size,
        "max_queue_delay_ms": args.max_queue_delay_ms,
        "wait_when_idle": args.wait_when_idle,
        "executor": args.executor,
        "seconds": args.seconds,
        "results": rows,
    })  # fmt: skip


if __name__ == "__main__":
    main()
