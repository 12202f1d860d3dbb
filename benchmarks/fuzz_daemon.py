"""Long fuzz run against a live daemon: N malformed, truncated, bit-flipped and CRC-forged
messages over a real socket, with well-formed requests mixed in.

The daemon (`edgecloud serve --cut blocks`) runs in a child process. Every message is
expected to be answered (except frames above the size limit, on a separate connection, whose
connection libzmq drops); well-formed requests must keep getting the right answer. Writes
cases, replies by code, crashes, hangs, and the daemon's idle and peak RSS to JSON.

    python benchmarks/fuzz_daemon.py --messages 100000   # -> benchmarks/results/fuzz_daemon.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from typing import Callable, Dict, List

import numpy as np
import zmq
from common import RESULTS, machine, process_memory_mb, real_features, write_result

from edgecloud.cloud.process import DaemonProcess
from edgecloud.codec import FeatureCodec, bitstream
from edgecloud.codec.bitstream import BitstreamHeader
from edgecloud.presets import preset_calibrations
from edgecloud.transport import Request, make_dealer, pack_request, unpack_reply

CUT = "blocks"
SPECS = ["raw", "f16-zstd", "q8-ncc-zstd", "q4-ncc-lz4", "q8-ct-png", "q8-ct-webp90",
         "q4-ncc-crans-s2.5-pt", "q8-ct-h264-qp44", "q8-ct-av1-crf53"]  # fmt: skip


class Generator:
    """Message generators (numpy RNG, reproducible by seed)."""

    def __init__(self, spec, features: np.ndarray, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.spec = spec
        cals = {c.spec: c for c in preset_calibrations().values() if c.channels == 320}
        self.streams = [
            FeatureCodec.from_spec(s, cals.get(s)).encode(f) for s in SPECS for f in features[:4]
        ]
        self.n = 0

    def request(self, codec: str = "q8-ncc-zstd") -> Request:
        self.n += 1
        return Request(
            model=self.spec.name,
            weights_id=self.spec.weights_id,
            cut=CUT,
            codec=codec,
            id=f"fuzz-{self.n}",
        )

    def _stream(self) -> bytearray:
        return bytearray(self.streams[self.rng.integers(len(self.streams))])

    def random_frames(self) -> List[bytes]:
        sizes = self.rng.integers(0, 2000, size=self.rng.integers(1, 3))
        return [self.rng.bytes(int(n)) for n in sizes]

    def random_header(self) -> List[bytes]:
        keys = ["v", "kind", "id", "model", "weights_id", "cut", "codec", "output", "top_k", "x"]
        values = [None, True, -1, 0, 1, 2**40, 1.5, "", "infer", "ping", "a" * 100, [1], {"a": 1}]
        obj = {str(self.rng.choice(keys)): values[self.rng.integers(len(values))] for _ in range(5)}
        return [json.dumps(obj).encode(), self.rng.bytes(64)]

    def deep_nesting(self) -> List[bytes]:
        depth = int(self.rng.integers(10, 2000))
        return [b"[" * depth + b"]" * depth]

    def truncated(self) -> List[bytes]:
        data = self._stream()
        return pack_request(self.request(), bytes(data[: self.rng.integers(0, len(data))]))

    def bit_flipped(self) -> List[bytes]:
        data = self._stream()
        for pos in self.rng.integers(0, len(data), size=self.rng.integers(1, 8)):
            data[pos] ^= 1 << int(self.rng.integers(8))
        return pack_request(self.request(), bytes(data))

    def forged(self) -> List[bytes]:
        header, payload = bitstream.unpack(bytes(self._stream()))
        fields = dict(header.__dict__)
        choice = self.rng.integers(6)
        if choice == 0:
            ndim = int(self.rng.integers(1, 7))
            fields["shape"] = tuple(int(d) for d in self.rng.integers(1, 1 << 31, size=ndim))
        elif choice == 1:
            fields["shape"] = (1 << int(self.rng.integers(20, 31)),)
        elif choice == 2:
            fields["spec"] = str(self.rng.choice(SPECS + ["q9-ncc-crans-s2.5-pt", "zzz"]))
        elif choice == 3:
            fields["calibration_id"], fields["calibration_hash"] = "643080a4", "00" * 8
        elif choice == 4:
            n = int(self.rng.integers(0, 400))
            fields["lo"], fields["hi"] = np.zeros(n, np.float32), np.full(n, 1e30, np.float32)
        else:
            payload = self.rng.bytes(int(self.rng.integers(0, 4000)))
        try:
            data = bitstream.pack(BitstreamHeader(**fields), payload)
        except Exception:  # a field that cannot be written: send the original
            data = bytes(self._stream())
        return pack_request(self.request(), data)

    def many_frames(self) -> List[bytes]:
        count = int(self.rng.integers(3, 65))
        return [pack_request(self.request(), b"")[0]] + [b"\0" * 1000] * count

    def kinds(self) -> Dict[str, Callable[[], List[bytes]]]:
        return {
            "random_frames": self.random_frames,
            "random_header": self.random_header,
            "deep_nesting": self.deep_nesting,
            "truncated": self.truncated,
            "bit_flipped": self.bit_flipped,
            "crc_forged": self.forged,
            "many_frames": self.many_frames,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=32, help="messages in flight")
    parser.add_argument("--good-every", type=int, default=50, help="a good request every N")
    parser.add_argument("--hang-s", type=float, default=10.0, help="no reply for this long = hang")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=str(RESULTS / "fuzz_daemon.json"))
    args = parser.parse_args()

    spec, features, top1 = real_features(CUT, images=4)
    gen = Generator(spec, features, args.seed)
    good_payload = FeatureCodec.from_spec("q8-ncc-zstd").encode(features[0])
    daemon = DaemonProcess(["--bind", "tcp://127.0.0.1:0", "--cut", CUT, "--threads", "1",
                            "--stats-interval", "3600"])  # fmt: skip
    endpoint = daemon.start()
    ctx = zmq.Context()
    sock = make_dealer(ctx, endpoint)
    kinds = gen.kinds()
    names = sorted(kinds)
    sent: Counter = Counter()
    codes: Counter = Counter()
    good: Dict[str, bool] = {}
    wrong_answers = hangs = outstanding = received = 0
    dropped_peers = 0
    for _ in range(20):  # warm-up, then the idle footprint
        sock.send_multipart(pack_request(gen.request(), good_payload))
        sock.recv_multipart()
    idle_rss, _ = process_memory_mb(daemon.pid)
    start = time.perf_counter()
    last_reply = time.monotonic()

    def receive(block: bool) -> bool:
        nonlocal outstanding, received, wrong_answers, last_reply
        if not sock.poll(100 if block else 0):
            return False
        reply = unpack_reply(sock.recv_multipart())
        outstanding -= 1
        received += 1
        last_reply = time.monotonic()
        codes[reply.code] += 1
        if reply.id in good:
            good[reply.id] = reply.ok and reply.indices[0] == int(top1[0])
            wrong_answers += not good[reply.id]
        return True

    for i in range(args.messages):
        if i % args.good_every == 0:
            request = gen.request()
            good[request.id] = False
            frames, kind = pack_request(request, good_payload), "good"
        elif i % 5000 == 4999:  # a frame above the size limit: libzmq drops that peer
            big = make_dealer(ctx, endpoint)
            big.send_multipart([pack_request(gen.request(), b"")[0], b"\0" * (4 << 20)])
            big.close(linger=2000)
            dropped_peers += 1
            continue
        else:
            kind = names[gen.rng.integers(len(names))]
            frames = kinds[kind]()
        sock.send_multipart(frames)
        sent[kind] += 1
        outstanding += 1
        while outstanding >= args.window:
            if not receive(block=True) and time.monotonic() - last_reply > args.hang_s:
                hangs += 1
                break
        if hangs or daemon.proc.poll() is not None:
            break
    while outstanding > 0 and daemon.proc.poll() is None:
        if not receive(block=True) and time.monotonic() - last_reply > args.hang_s:
            hangs += 1
            break
    elapsed = time.perf_counter() - start
    crashed = daemon.proc.poll() is not None
    rss, peak = (0.0, 0.0) if crashed else process_memory_mb(daemon.pid)
    exit_code = daemon.stop(30)
    ctx.destroy(linger=0)
    result = {
        "benchmark": "fuzz_daemon",
        "machine": machine(),
        "cut": CUT,
        "messages": sum(sent.values()),
        "oversized_peers_dropped": dropped_peers,
        "sent_by_kind": dict(sorted(sent.items())),
        "replies": received,
        "replies_by_code": dict(sorted(codes.items())),
        "unanswered": sum(sent.values()) - received,
        "good_requests": len(good),
        "good_wrong": wrong_answers,
        "good_not_ok": sum(1 for ok in good.values() if not ok),
        "crashes": int(crashed),
        "daemon_exit_code": exit_code,
        "hangs": hangs,
        "seconds": round(elapsed, 1),
        "messages_per_s": round(sum(sent.values()) / elapsed, 1),
        "idle_rss_mb": round(idle_rss, 1),
        "final_rss_mb": round(rss, 1),
        "peak_rss_mb": round(peak, 1),
        "peak_over_idle": round(peak / idle_rss, 3) if idle_rss and peak else None,
    }
    print(json.dumps(result, indent=2))
    write_result(args.json, result)


if __name__ == "__main__":
    main()
