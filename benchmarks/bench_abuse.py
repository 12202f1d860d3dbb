"""Load and abuse: well-behaved edge clients with and without one abusive client, in one run.

The daemon (`edgecloud serve --cut blocks`) runs in a child process; each well-behaved edge
is a process that sends real q8-ncc-zstd features of the shared images at a fixed rate (a
camera) through edgecloud's FeatureClient. Phase ``quiet``: the good edges alone. Then the
same plus one abusive process that floods valid requests as fast as it can, sends garbage,
sends CRC-forged streams that declare huge shapes, or reads none of the replies to its own
requests (a slow reader) -- each kind alone, then all at once. Every process of a phase is
started, connected and warm before its clock starts (a barrier), so process start-up is not
measured. Reports the good edges' success rate and p50/p99 round trip per phase, the p99
against the quiet phase, the same for the settled state (requests sent after the phase's first
two seconds, i.e. without the abuse's onset), the daemon's stats after each phase, and its
idle and peak RSS.

    python benchmarks/bench_abuse.py        # -> benchmarks/results/abuse.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import threading
import time
from typing import Any, Dict, List

import numpy as np
import zmq
from common import RESULTS, machine, percentiles, process_memory_mb, real_features, write_result

from edgecloud.cloud.process import DaemonProcess
from edgecloud.codec import FeatureCodec, bitstream
from edgecloud.codec.bitstream import BitstreamHeader
from edgecloud.transport import FeatureClient, Request, make_dealer, pack_request

CUT = "blocks"
ABUSES = ["flood", "garbage", "forged_shape", "slow_reader"]
#: the first seconds of a phase, reported apart as well (the abuse's onset)
ONSET_S = 2.0


def good_edge(endpoint: str, ident: Dict[str, str], payloads: List[bytes], rate: float,
              phase_s: float, seconds: float, start: Any, out: mp.Queue) -> None:  # fmt: skip
    """Open loop at ``rate`` requests/s from ``phase_s`` after the common start (cameras are
    not in step); (code, timings) of every request, the timings with ``sent_s``, the send
    time after the start."""
    records = []
    with FeatureClient(endpoint, window=8, timeout_s=10.0, retries=3) as client:
        for p in payloads[:2]:  # connected and warm before the clock starts
            client.request(Request(**ident), p)
        start.wait(120)
        futures = []
        t0 = time.perf_counter() + phase_s
        time.sleep(phase_s)
        i = 0
        while time.perf_counter() - t0 < seconds:
            futures.append(client.submit(Request(**ident), payloads[i % len(payloads)]))
            i += 1
            time.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
        for k, future in enumerate(futures):
            try:
                reply = future.result(60)
                records.append((reply.code, dict(reply.timings, sent_s=phase_s + k / rate)))
            except Exception:  # no reply at all
                records.append(("no_reply", {}))
    out.put(records)


def abuser(endpoint: str, ident: Dict[str, str], payload: bytes, seconds: float,
           modes: List[str], nice: int, start: Any, out: mp.Queue) -> None:  # fmt: skip
    os.nice(nice)  # > 0: stands in for an abuser on another machine (it yields the CPU)
    ctx = zmq.Context()
    counts: Dict[str, int] = {}
    header, data = bitstream.unpack(payload)
    forged_fields = dict(header.__dict__, shape=(1 << 30,))
    forged = bitstream.pack(BitstreamHeader(**forged_fields), data)

    def run(kind: str, make, sock: zmq.Socket) -> None:
        n = 0
        while time.monotonic() < stop:
            n += 1
            try:
                sock.send_multipart(make(n), zmq.NOBLOCK)
            except zmq.Again:
                time.sleep(0.001)
                continue
            if kind != "slow_reader":
                while sock.poll(0):
                    sock.recv_multipart()
            else:
                time.sleep(0.0005)
        counts[kind] = n
        sock.close(linger=0)

    def request(n: int, body: bytes) -> List[bytes]:
        return pack_request(Request(**ident, id=f"abuse-{n}"), body)

    rng = np.random.default_rng(1)
    kinds = {
        "flood": lambda n: request(n, payload),
        "garbage": lambda n: [rng.bytes(200), rng.bytes(int(rng.integers(0, 5000)))],
        "forged_shape": lambda n: request(n, forged),
        "slow_reader": lambda n: request(n, payload),
    }
    sockets = {mode: make_dealer(ctx, endpoint) for mode in modes}
    start.wait(120)
    stop = time.monotonic() + seconds
    threads = [
        threading.Thread(target=run, args=(mode, kinds[mode], sockets[mode])) for mode in modes
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ctx.destroy(linger=0)
    out.put(counts)


class StallWatch(threading.Thread):
    """Sleeps 5 ms at a time and notes every wake-up later than ``min_ms``: a stall of the
    whole machine (a VM paused by its host, say), which no process can do anything about,
    as against one of the daemon's."""

    def __init__(self, min_ms: float = 50.0) -> None:
        super().__init__(daemon=True)
        self.min_ms, self.t0, self.stalls = min_ms, time.perf_counter(), []
        self.running = True

    def run(self) -> None:
        last = time.perf_counter()
        while self.running:
            time.sleep(0.005)
            now = time.perf_counter()
            if (now - last) * 1000 > self.min_ms:
                self.stalls.append({"at_s": round(last - self.t0, 3),
                                    "ms": round((now - last) * 1000, 1)})  # fmt: skip
            last = now


def phase(daemon: DaemonProcess, ident, payloads, edges: int, rate: float, seconds: float,
          abuse: List[str], abuser_nice: int) -> Dict[str, Any]:  # fmt: skip
    endpoint = daemon.endpoint
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start = ctx.Barrier(edges + bool(abuse) + 1)  # every process started, connected and warm
    procs = [
        ctx.Process(
            target=good_edge,
            args=(endpoint, ident, payloads, rate, k / (edges * rate), seconds, start, out),
        )
        for k in range(edges)
    ]
    if abuse:
        procs.append(
            ctx.Process(
                target=abuser,
                args=(endpoint, ident, payloads[0], seconds + 1, abuse, abuser_nice, start, out),
            )
        )
    for p in procs:
        p.start()
    start.wait(180)
    watch = StallWatch()
    watch.start()
    results = [out.get(timeout=seconds + 180) for _ in procs]
    watch.running = False
    for p in procs:
        p.join(30)
    records = [r for res in results if isinstance(res, list) for r in res]
    abuse_counts = next((res for res in results if isinstance(res, dict)), {})
    ok = [timings for code, timings in records if code == "ok"]
    settled = [t for t in ok if t["sent_s"] >= ONSET_S]
    codes: Dict[str, int] = {}
    for code, _timings in records:
        codes[code] = codes.get(code, 0) + 1
    with FeatureClient(endpoint) as client:
        stats = client.request(Request(kind="stats")).info
    rss, peak = process_memory_mb(daemon.pid)
    return {
        "daemon_rss_mb_after": round(rss, 1),
        "daemon_peak_rss_mb_so_far": round(peak, 1),
        "phase": "+".join(abuse) or "quiet",
        "daemon_stats_after": stats,
        "good_requests": len(records),
        "good_success_rate": round(len(ok) / max(1, len(records)), 5),
        "good_codes": codes,
        # round trip, then its parts inside the daemon: received -> tail done (server),
        # received -> batch formed (queue), the tail's run; the rest of the round trip is
        # the clients', libzmq's and the kernel's share of the cores
        **{
            key: value
            for part in ("rtt", "server", "queue", "tail")
            for key, value in percentiles([t[f"{part}_ms"] for t in ok], f"good_{part}").items()
        },
        # the same after the first ONSET_S seconds: the abuse's onset (a rate limit's burst
        # allowance, for one) left out, the steady state
        **percentiles([t["rtt_ms"] for t in settled], f"good_settled_{ONSET_S:g}s_rtt"),
        # where the p99 comes from: the slowest 1 %, by send time
        "good_slowest": [
            {k: round(t[k], 3) for k in ("sent_s", "rtt_ms", "server_ms", "queue_ms", "tail_ms")}
            for t in sorted(
                sorted(ok, key=lambda t: -t["rtt_ms"])[: max(1, len(ok) // 100)],
                key=lambda t: t["sent_s"],
            )
        ],  # fmt: skip
        # wake-ups of a sleeping thread in this process later than 50 ms: the machine's stalls
        "host_stalls": [w for w in watch.stalls if w["at_s"] <= seconds],
        "abuser_messages": abuse_counts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=int, default=4, help="well-behaved edge processes")
    parser.add_argument("--rate", type=float, default=25.0, help="requests/s per edge")
    parser.add_argument("--seconds", type=float, default=15.0, help="per phase")
    parser.add_argument(
        "--abuser-nice",
        type=int,
        default=0,
        help="niceness of the abusive process (e.g. 19: it stands in for a client on another "
        "machine, which takes none of the daemon's CPU; 0: it competes for the same cores)",
    )
    parser.add_argument(
        "--serve-args",
        default="",
        help="more `edgecloud serve` options, e.g. '--rate-per-client 100' (an operator's limits)",
    )
    parser.add_argument(
        "--abuse",
        default=",".join(ABUSES),
        help="abuse kinds to run, each alone and then all at once (after the quiet phase)",
    )
    parser.add_argument("--json", default=str(RESULTS / "abuse.json"))
    args = parser.parse_args()
    kinds = [k for k in args.abuse.split(",") if k]
    unknown = sorted(set(kinds) - set(ABUSES))
    if unknown:
        parser.error(f"unknown abuse kinds {unknown}; known: {ABUSES}")
    phases = [[]] + [[k] for k in kinds] + ([kinds] if len(kinds) > 1 else [])

    spec, features, _top1 = real_features(CUT, images=8)
    codec = FeatureCodec.from_spec("q8-ncc-zstd")
    payloads = [codec.encode(f) for f in features]
    ident = {"model": spec.name, "weights_id": spec.weights_id, "cut": CUT, "codec": codec.name}
    daemon = DaemonProcess(["--bind", "tcp://127.0.0.1:0", "--cut", CUT, "--threads", "1",
                            "--stats-interval", "3600", *args.serve_args.split()])  # fmt: skip
    endpoint = daemon.start()
    try:
        with FeatureClient(endpoint) as warm:
            for p in payloads:
                warm.request(Request(**ident), p)
        idle_rss, _ = process_memory_mb(daemon.pid)
        rows = [
            phase(
                daemon,
                ident,
                payloads,
                args.edges,
                args.rate,
                args.seconds,
                abuse,
                args.abuser_nice,
            )  # fmt: skip
            for abuse in phases
        ]
        alive = daemon.proc.poll() is None
        _rss, peak = process_memory_mb(daemon.pid) if alive else (0.0, 0.0)
    finally:
        code = daemon.stop(30)
    quiet = rows[0]
    for row in rows[1:]:
        if quiet.get("good_rtt_p99_ms") and row.get("good_rtt_p99_ms"):
            row["p99_ratio_vs_quiet"] = round(row["good_rtt_p99_ms"] / quiet["good_rtt_p99_ms"], 2)
        settled = f"good_settled_{ONSET_S:g}s_rtt_p99_ms"
        if quiet.get(settled) and row.get(settled):
            row["settled_p99_ratio_vs_quiet"] = round(row[settled] / quiet[settled], 2)
    result = {
        "benchmark": "bench_abuse",
        "machine": machine(),
        "cut": CUT,
        "codec": codec.name,
        "edges": args.edges,
        "rate_per_edge": args.rate,
        "seconds_per_phase": args.seconds,
        "abuser_nice": args.abuser_nice,
        "serve_args": args.serve_args,
        "phases": rows,
        "daemon_alive": alive,
        "daemon_exit_code": code,
        "idle_rss_mb": round(idle_rss, 1),
        "peak_rss_mb": round(peak, 1),
        "peak_over_idle": round(peak / idle_rss, 3) if peak else None,
    }
    print(json.dumps(result, indent=2))
    write_result(args.json, result)


if __name__ == "__main__":
    main()
