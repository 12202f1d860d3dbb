"""The daemon I/O thread's work for each request, step by step, on an otherwise idle core.

Each step is the daemon's own code, timed on its own over ``--requests`` real requests
(Lite0 cut ``blocks``, real ``q8-ncc-zstd`` features): receiving from the ROUTER (the
messages already queued by a DEALER in the same process, over TCP on loopback), validating
the header, checking the bitstream's header against the cut, admission (check, admit, a
batch, release), the reply book (start, finish, cache), counters, packing a top-5 reply and
sending it. The sum is the I/O thread's Python per request without contention. Then, in
the same run, a daemon in this process (one decode worker, one torch thread) is loaded by 4
client processes × 16 requests in flight (``bench_daemon``'s clients), and the CPU time of
its I/O thread and its tail thread per answered image is read from /proc: the same work
with the cores shared. Writes JSON.

    python benchmarks/bench_io_path.py      # -> benchmarks/results/io_path.json
"""

from __future__ import annotations

import argparse
import re
import time
from typing import Any, Callable, Dict, List

import zmq
from common import RESULTS, machine, real_features, write_result

from edgecloud.cloud.admission import Admission
from edgecloud.cloud.config import AdmissionConfig
from edgecloud.cloud.decode import precheck
from edgecloud.cloud.front import Front
from edgecloud.cloud.replies import ReplyBook
from edgecloud.cloud.stats import ServerStats, thread_cpu_seconds
from edgecloud.codec import FeatureCodec
from edgecloud.presets import preset_calibrations
from edgecloud.transport import Request, make_dealer, pack_request
from edgecloud.transport.protocol import Reply, pack_reply, unpack_request
from edgecloud.transport.sockets import SocketOptions

CUT = "blocks"


def per_item_us(run: Callable[[], None], items: int, repeat: int = 5) -> float:
    """Best of ``repeat`` runs of ``run`` (which handles ``items`` requests), µs per item."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return round(best / items * 1e6, 2)


def under_load(frames: List[List[bytes]], seconds: float = 8.0) -> Dict[str, Any]:
    """CPU µs per answered image of the daemon's I/O thread and tail thread, loaded by 4
    client processes × 16 in flight."""
    from bench_daemon import drive

    from edgecloud.cloud import BatchingConfig, CloudServer, ServerConfig

    for f in frames:  # bench_daemon's clients put their own ids in
        f[0] = re.sub(rb'"id":"[^"]*"', b'"id":"@ID@"', f[0])
    config = ServerConfig(
        bind="tcp://127.0.0.1:0",
        torch_threads=1,
        decode_workers=1,
        stats_interval_s=3600,
        batching=BatchingConfig(max_batch_size=64, max_queue_delay_ms=2),
        admission=AdmissionConfig(max_inflight_per_client=64),
    )
    with CloudServer(config) as server:
        drive(server.endpoint, frames, 1, 4, 2.0)  # warm-up
        ids = server.thread_ids()
        threads = {"io": ids["io"], "tail": ids["tail-0"]}
        before = thread_cpu_seconds(threads)
        result = drive(server.endpoint, frames, 4, 16, seconds)
        after = thread_cpu_seconds(threads)
    per_image = 1e6 / max(1, result["answered"])
    out = {
        f"{name}_thread_cpu_us_per_image": round((after[name] - before[name]) * per_image, 1)
        for name in threads
    }
    print(f"under load: {result['images_per_s']} images/s, {out}")
    return {"images_per_s": result["images_per_s"], **out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--json", default=str(RESULTS / "io_path.json"))
    args = parser.parse_args()
    n = args.requests

    spec, features, top1 = real_features(CUT, images=8)
    shape = features.shape[1:]
    codec = FeatureCodec.from_spec("q8-ncc-zstd")
    payloads = [codec.encode(f[None]) for f in features]
    ident = {"model": spec.name, "weights_id": spec.weights_id, "cut": CUT, "codec": codec.name}
    messages = [
        pack_request(Request(**ident, id=f"{i}-{i}"), payloads[i % len(payloads)]) for i in range(n)
    ]
    calibrations = preset_calibrations()
    reply = Reply(
        id="1234-1234",
        indices=[int(top1[0]), 1, 2, 3, 4],
        labels=["tench", "goldfish", "great white shark", "tiger shark", "hammerhead"],
        scores=[0.61, 0.2, 0.1, 0.05, 0.01],
        timings={"queue_ms": 5.1, "decode_ms": 0.3, "tail_ms": 3.2, "batch_size": 8,
                 "server_ms": 9.1},
    )  # fmt: skip

    ctx = zmq.Context()
    front = Front(ctx, "tcp://127.0.0.1:0", SocketOptions(max_message_bytes=1 << 20))
    dealer = make_dealer(ctx, front.endpoint)
    received: List[Any] = []

    def receive() -> None:  # in chunks, within the high-water marks
        received.clear()
        for start in range(0, n, 200):
            for frames in messages[start : start + 200]:
                dealer.send_multipart(frames)
            while len(received) < min(n, start + 200):
                message = front.receive()
                if message is None:
                    front.router.poll(1000)
                else:
                    received.append(message)

    def send() -> None:
        frames = pack_reply(reply)
        for message in received:
            front.send(message.routing_id, frames)
        for _ in range(n):
            dealer.recv_multipart()

    send_and_receive_us = per_item_us(receive, n)
    steps: Dict[str, float] = {}
    bodies = [[f.buffer for f in m.frames] for m in received]
    requests = [unpack_request(body) for body in bodies]
    steps["validate header (unpack_request)"] = per_item_us(
        lambda: [unpack_request(body) for body in bodies], n
    )
    steps["check bitstream header (precheck)"] = per_item_us(
        lambda: [precheck(payload, shape, calibrations) for _, payload in requests], n
    )

    def admission() -> None:
        adm = Admission(AdmissionConfig(max_inflight_per_client=n), 2 * n, 8, 0.0)
        for m, (_, payload) in zip(received, requests):
            adm.check(m.client, len(payload))
            adm.admit(m.client, (spec.name, CUT, False), m, len(payload))
        while adm.next_batch(time.perf_counter()) is not None:
            pass
        for m in received:
            adm.release(m.client)

    steps["admission (check, admit, batch, release)"] = per_item_us(admission, n)

    def reply_book() -> None:
        book = ReplyBook(size=2 * n)
        for m, (r, _) in zip(received, requests):
            key = (m.client, r.id)
            book.get(key)
            book.waiting(key)
            book.start(key, m.routing_id)
        for m, (r, _) in zip(received, requests):
            key = (m.client, r.id)
            book.finish(key)
            book.put(key, reply, 280)

    steps["reply book (lookup, start, finish, cache)"] = per_item_us(reply_book, n)
    stats = ServerStats()

    def counters() -> None:
        for _ in range(n):
            stats.count("ok")
            stats.record(reply.timings)

    steps["counters (stats)"] = per_item_us(counters, n)
    steps["pack a top-5 reply"] = per_item_us(lambda: [pack_reply(reply) for _ in range(n)], n)
    steps["send reply + receive it at the DEALER"] = per_item_us(send, n)
    steps["DEALER send + ROUTER receive"] = send_and_receive_us
    dealer.close(0)
    front.close()
    ctx.term()
    total = round(sum(steps.values()), 1)
    loaded = under_load(
        [[bytes(f) for f in m] for m in (messages[i] for i in range(len(payloads)))]
    )
    for step, us in steps.items():
        print(f"{us:8.2f} µs  {step}")
    print(f"{total:8.1f} µs  total per request (the DEALER's share of the transport included)")
    write_result(
        args.json,
        {
            "benchmark": "bench_io_path",
            "machine": machine(),
            "cut": CUT,
            "codec": codec.name,
            "requests": n,
            "us_per_request": steps,
            "total_us_per_request": total,
            "under_load": loaded,
        },
    )


if __name__ == "__main__":
    main()
