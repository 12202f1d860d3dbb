"""Daemon hardening: one test per way a hostile or careless client broke the daemon.

Real sockets on loopback, the real EfficientNet-Lite0 tail at cut ``blocks``, features of real
shared ImageNet images. Tests that could crash or bloat the daemon run it as a child process
(``start_daemon``) and watch its process (exit status, RSS from /proc).
"""

from __future__ import annotations

import io
import logging
import os
import signal
import threading
import time
import urllib.request
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
import zmq
from PIL import Image

from edgecloud.cloud import BatchingConfig, CloudServer, ServerConfig, TailRegistry
from edgecloud.cloud.admission import ACTIVE_S, Admission
from edgecloud.cloud.config import AdmissionConfig
from edgecloud.cloud.metrics import sample_value
from edgecloud.cloud.ratelog import RateLimitedLog
from edgecloud.cloud.replies import ReplyBook
from edgecloud.codec import FeatureCodec, bitstream, decode_bitstream, peek_header
from edgecloud.codec.bitstream import BitstreamHeader
from edgecloud.errors import BitstreamError
from edgecloud.partition import split
from edgecloud.transport import (
    BadRequest,
    ErrorCode,
    FeatureClient,
    Reply,
    Request,
    make_dealer,
    pack_request,
    unpack_reply,
)

CUT = "blocks"  # 320x7x7, the cheapest tail
SHAPE = (320, 7, 7)


@pytest.fixture(scope="module")
def reference(lite0, sample_images):
    x = sample_images(4)
    head, _tail = split(lite0, CUT)
    with torch.inference_mode():
        features = head(x).numpy()
        top1 = lite0.module(x).argmax(1).numpy()
    codec = FeatureCodec.from_spec("q8-ncc-zstd")
    return {"features": features, "top1": top1, "payloads": [codec.encode(f) for f in features]}


@pytest.fixture(scope="module")
def registry(lite0):
    registry = TailRegistry("cpu")
    registry.add(lite0, CUT)
    return registry


def _server(registry, **config) -> CloudServer:
    batching = config.pop("batching", BatchingConfig(max_batch_size=4, max_queue_delay_ms=2))
    server = CloudServer(
        ServerConfig(bind="tcp://127.0.0.1:0", batching=batching, **config), registry=registry
    )
    server.start()
    return server


@pytest.fixture(scope="module")
def server(registry):
    server = _server(registry)
    yield server
    server.stop()


def _infer(lite0, codec: str = "q8-ncc-zstd", **kw) -> Request:
    return Request(model=lite0.name, weights_id=lite0.weights_id, cut=CUT, codec=codec, **kw)


def _ask(sock: zmq.Socket, frames, timeout_ms: int = 30_000) -> Reply:
    sock.send_multipart(frames)
    assert sock.poll(timeout_ms), "the daemon must answer"
    return unpack_reply(sock.recv_multipart())


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmRSS")


def _forged(spec: str, shape, payload: bytes = b"\0" * 16, **fields) -> bytes:
    """A bitstream with a valid (recomputed) CRC that declares ``shape``."""
    header = BitstreamHeader(
        version=bitstream.FORMAT_VERSION, spec=spec, dtype="float32", shape=tuple(shape), **fields
    )
    return bitstream.pack(header, payload)


# -- D1: a client that floods and then disconnects abruptly -------------------------------------


def test_flood_then_abrupt_close_leaves_the_daemon_alive(start_daemon, lite0, reference):
    daemon = start_daemon("--cut", CUT, "--threads", "1")
    ctx = zmq.Context()
    try:
        for _round in range(3):
            flood = make_dealer(ctx, daemon.endpoint)
            frames = pack_request(_infer(lite0), reference["payloads"][0])
            deadline, n = time.monotonic() + 2.0, 0
            while time.monotonic() < deadline:
                n += 1
                flood.send_multipart([frames[0].replace(b'"id":"', b'"id":"%d-' % n), frames[1]])
            flood.close(linger=0)  # gone without reading its replies
        time.sleep(1.0)
        assert daemon.proc.poll() is None, f"daemon died with {daemon.proc.returncode}"
        with FeatureClient(daemon.endpoint, timeout_s=30) as client:
            reply = client.request(_infer(lite0), reference["payloads"][1])
            stats = client.request(Request(kind="stats")).info
        assert reply.ok and reply.indices[0] == reference["top1"][1]
        # start-up objects are out of the collector's full passes (a pass over them stalled
        # every client for 100-200 ms)
        assert stats["gc_frozen_objects"] > 10_000
        assert stats["thread_cpu_s"]["io"] > 0  # the I/O thread has read a flood
    finally:
        ctx.destroy(linger=0)


# -- D2, D3: sizes from the network are checked before anything is allocated --------------------


def test_forged_shapes_and_many_frames_are_refused_without_memory_growth(
    start_daemon, lite0, reference
):
    daemon = start_daemon("--cut", CUT, "--threads", "1")
    ctx = zmq.Context()
    try:
        sock = make_dealer(ctx, daemon.endpoint)
        assert _ask(sock, pack_request(_infer(lite0), reference["payloads"][0])).ok  # warm
        before = _rss_mb(daemon.pid)
        range_fields = {"lo": np.zeros(1, np.float32), "hi": np.ones(1, np.float32)}
        for shape in [(1 << 30,), (1, 1 << 29), (1 << 12, 1 << 12, 64), (2, 320, 7, 7)]:
            data = _forged("q8-ncc-zstd-msg-pt", shape, **range_fields)
            assert len(data) < 100
            reply = _ask(sock, pack_request(_infer(lite0), data))
            assert reply.code == ErrorCode.SHAPE_MISMATCH, reply.message
        raw = _forged("raw", (1 << 28,))
        assert _ask(sock, pack_request(_infer(lite0, "raw"), raw)).code == ErrorCode.SHAPE_MISMATCH
        # many frames, each under the frame limit: refused as a whole, not decoded
        many = [pack_request(_infer(lite0), b"")[0]] + [b"\0" * 100_000] * 64
        assert _ask(sock, many).code == ErrorCode.TOO_LARGE
        # frames above the limit (16 MiB each once made the daemon buffer 1 GiB): peer dropped
        big = make_dealer(ctx, daemon.endpoint)
        chunk = b"\0" * (4 << 20)
        big.send_multipart([pack_request(_infer(lite0), b"")[0]] + [chunk] * 64, copy=False)
        assert not big.poll(2000)
        big.close(linger=0)
        after = _rss_mb(daemon.pid)
        assert after - before < 64, f"RSS grew from {before:.0f} to {after:.0f} MB"
        assert _ask(sock, pack_request(_infer(lite0), reference["payloads"][2])).ok
    finally:
        ctx.destroy(linger=0)


def test_decoder_refuses_bad_ranks_and_unexpected_shapes_before_allocating():
    feature = np.random.default_rng(0).random(SHAPE, dtype=np.float32)
    good = FeatureCodec.from_spec("q8-ncc-zstd").encode(feature)
    payload = bitstream.unpack(good)[1]
    header = peek_header(good)
    for shape in [(1, 1, 320, 7, 7), (2, 2, 2, 2, 2, 2)]:  # D8: any rank above 4
        forged = bitstream.pack(BitstreamHeader(**{**header.__dict__, "shape": shape}), payload)
        with pytest.raises(BitstreamError, match="dimensional"):
            decode_bitstream(forged)
    with pytest.raises(BitstreamError, match="expected"):
        decode_bitstream(good, shape=(112, 14, 14))
    assert decode_bitstream(good, shape=SHAPE).shape == SHAPE
    huge = _forged("raw", (1 << 20, 1 << 10))
    with pytest.raises(BitstreamError, match="limit"):
        decode_bitstream(huge)


def test_zstd_payload_declaring_a_huge_size_is_not_inflated():
    import zstandard

    header = peek_header(FeatureCodec.from_spec("f32-zstd").encode(np.zeros(SHAPE, np.float32)))
    bomb = zstandard.ZstdCompressor(level=3).compress(b"\0" * (64 << 20))  # 64 MiB in ~2 KB
    data = bitstream.pack(header, bomb)
    with pytest.raises(BitstreamError, match="expected"):
        decode_bitstream(data)


# -- D4: two clients reusing one request id each get their own answer --------------------------


def test_same_request_id_from_two_clients_gets_two_answers(server, lite0, reference):
    with FeatureClient(server.endpoint) as a, FeatureClient(server.endpoint) as b:
        for _round in range(2):  # in flight together, then again once both are cached
            fa = a.submit(_infer(lite0, id="frame-1"), reference["payloads"][0])
            fb = b.submit(_infer(lite0, id="frame-1"), reference["payloads"][3])
            ra, rb = fa.result(60), fb.result(60)
            assert ra.indices[0] == reference["top1"][0]
            assert rb.indices[0] == reference["top1"][3]
        assert ra.cached and rb.cached  # the second round: each from its own cache entry


# -- D5, D6: malformed headers and foreign image formats ----------------------------------------


def test_deeply_nested_header_is_malformed(server):
    ctx = zmq.Context()
    try:
        sock = make_dealer(ctx, server.endpoint)
        for header in [b"[" * 990 + b"]" * 990, b'{"v":1,"id":' + b"[" * 1500 + b"]" * 1500 + b"}"]:
            assert _ask(sock, [header]).code == ErrorCode.MALFORMED
    finally:
        ctx.destroy(linger=0)


@pytest.mark.parametrize("fmt", ["TIFF", "BMP", "GIF", "PCX", "JPEG"])
def test_png_stream_with_another_image_format_is_refused(server, lite0, reference, fmt):
    data = FeatureCodec.from_spec("q8-ct-png").encode(reference["features"][0])
    header, payload = bitstream.unpack(data)
    buf = io.BytesIO()
    Image.open(io.BytesIO(payload)).save(buf, format=fmt)
    foreign = bitstream.pack(header, buf.getvalue())
    with pytest.raises(BitstreamError, match="cannot be decoded"):
        decode_bitstream(foreign)
    with FeatureClient(server.endpoint) as client:
        reply = client.request(_infer(lite0, "q8-ct-png"), foreign)
        assert reply.code == ErrorCode.BAD_BITSTREAM
        assert client.request(_infer(lite0, "q8-ct-png"), data).ok


# -- D7: rejections are logged at a bounded rate ------------------------------------------------


def test_rejection_log_lines_are_rate_limited(server, caplog):
    ctx = zmq.Context()
    try:
        sock = make_dealer(ctx, server.endpoint)
        with caplog.at_level(logging.WARNING, logger="edgecloud.serve"):
            for i in range(500):
                sock.send_multipart([b"garbage %d" % i])
            for _ in range(500):
                assert sock.poll(30_000)
                assert unpack_reply(sock.recv_multipart()).code == ErrorCode.MALFORMED
        rejected = [r for r in caplog.records if "event=rejected" in r.getMessage()]
        assert 1 <= len(rejected) <= 20
    finally:
        ctx.destroy(linger=0)
    log = logging.getLogger("test-ratelog")
    limited = RateLimitedLog(log, burst=3, interval_s=3600)
    for _ in range(10):
        limited.log(logging.WARNING, "queue_full", "event=rejected code=queue_full")
    assert limited.total_suppressed == 7


# -- fairness -----------------------------------------------------------------------------------


def test_flooding_client_does_not_starve_a_well_behaved_one(registry, lite0, reference):
    server = _server(
        registry,
        batching=BatchingConfig(max_batch_size=4, max_queue_delay_ms=2),
        admission=AdmissionConfig(max_inflight_per_client=8),
        http_bind="127.0.0.1:0",
    )
    stop = threading.Event()
    flood_codes: List[str] = []

    def flood() -> None:
        ctx = zmq.Context()
        sock = make_dealer(ctx, server.endpoint)
        frames = pack_request(_infer(lite0), reference["payloads"][0])
        n = 0
        while not stop.is_set():
            n += 1
            sock.send_multipart([frames[0].replace(b'"id":"', b'"id":"%d' % n), frames[1]])
            while sock.poll(0):
                flood_codes.append(unpack_reply(sock.recv_multipart()).code)
        ctx.destroy(linger=0)

    thread = threading.Thread(target=flood)
    thread.start()
    try:
        time.sleep(0.5)
        with FeatureClient(server.endpoint, window=2, retries=0, timeout_s=60) as client:
            futures = [
                client.submit(_infer(lite0), reference["payloads"][i % 4]) for i in range(40)
            ]
            replies = [f.result(120) for f in futures]
            pauses = client.request(Request(kind="stats")).info["flood_pauses"]
            with urllib.request.urlopen(server.http_url + "/metrics", timeout=10) as response:
                metrics = response.read().decode()
    finally:
        stop.set()
        thread.join(30)
        server.stop()
    assert [r.code for r in replies] == ["ok"] * 40
    assert [r.indices[0] for r in replies] == [reference["top1"][i % 4] for i in range(40)]
    assert ErrorCode.QUEUE_FULL in flood_codes and ErrorCode.OK in flood_codes
    assert pauses > 0  # the flood was held back in libzmq's queues, not read at full speed
    assert sample_value(metrics, "edgecloud_flood_pauses") >= pauses


def test_fair_queue_takes_clients_in_turn_and_bounds_bytes():
    admission = Admission(AdmissionConfig(max_inflight_per_client=100, queue_bytes=1000), 100, 4, 1)
    for i in range(6):
        admission.check(b"flood", 10)
        admission.admit(b"flood", "k", ("flood", i), 10)
    admission.admit(b"quiet", "k", ("quiet", 0), 10)
    _key, batch = admission.next_batch(time.perf_counter())
    assert [q.item for q in batch] == [("flood", 0), ("quiet", 0), ("flood", 1), ("flood", 2)]
    with pytest.raises(BadRequest, match="1000 bytes"):
        admission.check(b"other", 990)
    limited = Admission(AdmissionConfig(max_inflight_per_client=2), 100, 4, 1)
    for _ in range(2):
        limited.check(b"c", 1)
        limited.admit(b"c", "k", None, 1)
    with pytest.raises(BadRequest, match="2 requests in flight"):
        limited.check(b"c", 1)
    limited.release(b"c")
    limited.check(b"c", 1)
    book = ReplyBook(size=100, max_bytes=250)
    for i in range(5):
        book.put((b"c", str(i)), Reply(id=str(i)), 100)
    assert len(book) == 2 and book.bytes == 200 and book.get((b"c", "4")) is not None


def test_rate_limit_allows_its_burst_then_refuses():
    from edgecloud.cli import build_parser
    from edgecloud.cli.serve import build_config

    flags = build_parser().parse_args(["serve", "--rate-per-client", "0.01", "--rate-burst", "3"])
    config = build_config(flags).admission
    assert (config.rate_per_client, config.rate_burst) == (0.01, 3)
    admission = Admission(config, 100, 4, 1)
    for _ in range(3):  # the burst: at once, above the rate
        admission.check(b"c", 1)
    with pytest.raises(BadRequest, match="more than 0.01 requests/s") as refused:
        admission.check(b"c", 1)
    assert refused.value.code == ErrorCode.RATE_LIMITED
    admission.check(b"other", 1)  # per client


def test_fair_batch_share_keeps_a_backlog_from_filling_batches():
    """With ``fair_batch_share``, a client's share of a batch is the batch size over the
    clients active in the last second: a backlog of one of 4 clients fills 2 of 8 places,
    the rest stay queued for the next batches (whole again once the others are gone)."""
    config = AdmissionConfig(max_inflight_per_client=100, fair_batch_share=True)
    admission = Admission(config, 100, 8, 1)
    now = time.perf_counter()
    for i in range(12):
        admission.admit(b"flood", "k", ("flood", i), 1)
    for client in ("a", "b", "c"):
        admission.admit(client.encode(), "k", (client, 0), 1)
    _key, batch = admission.next_batch(now, flush=True)
    assert sorted(q.item for q in batch) == [
        ("a", 0), ("b", 0), ("c", 0), ("flood", 0), ("flood", 1)
    ]  # fmt: skip
    for client in (b"a", b"b", b"c"):
        admission.release(client)
    _key, batch = admission.next_batch(now, flush=True)  # a, b, c still active: 2 again
    assert [q.item for q in batch] == [("flood", 2), ("flood", 3)]
    later = now + ACTIVE_S + 0.1  # a, b, c went quiet: the backlog may fill batches again
    _key, batch = admission.next_batch(later, flush=True)
    assert [q.item for q in batch] == [("flood", i) for i in range(4, 12)]
    from edgecloud.cli import build_parser
    from edgecloud.cli.serve import build_config

    flags = build_parser().parse_args(["serve", "--fair-batch-share"])
    assert build_config(flags).admission.fair_batch_share is True
    assert build_config(build_parser().parse_args(["serve"])).admission.fair_batch_share is False
    off = Admission(AdmissionConfig(max_inflight_per_client=100), 100, 8, 1)
    for i in range(12):
        off.admit(b"flood", "k", i, 1)
    off.admit(b"a", "k", "a", 1)
    assert len(off.next_batch(now, flush=True)[1]) == 8  # default: batches fill


# -- shutdown -----------------------------------------------------------------------------------


@pytest.mark.parametrize("to", ["daemon", "process group"])
def test_sigterm_drains_within_the_deadline_and_answers_everything(
    start_daemon, lite0, reference, to
):
    """Also when SIGTERM reaches the decode workers too (Ctrl-C, systemd's control-group
    kill): they stay until the daemon has drained."""
    drain = 1.0
    daemon = start_daemon(
        "--cut", CUT, "--threads", "1", "--max-batch-size", "1", "--drain-timeout", str(drain),
        "--max-inflight-per-client", "1024", "--decode-workers", "1", new_session=True,
    )  # fmt: skip
    with FeatureClient(daemon.endpoint, window=600, retries=0, timeout_s=60) as client:
        futures = [client.submit(_infer(lite0), reference["payloads"][i % 4]) for i in range(600)]
        while not any(f.done() for f in futures):
            time.sleep(0.01)
        start = time.monotonic()
        if to == "daemon":
            os.kill(daemon.pid, signal.SIGTERM)
        else:
            os.killpg(daemon.pid, signal.SIGTERM)
        code = daemon.proc.wait(30)
        elapsed = time.monotonic() - start
        codes = [f.result(30).code for f in futures]  # none lost: each answered once
    assert code == 0
    assert elapsed <= drain + 1.5, f"exit {elapsed:.2f} s after SIGTERM (drain {drain} s)"
    assert set(codes) == {ErrorCode.OK, ErrorCode.SHUTTING_DOWN}


def test_a_saturated_daemon_forms_no_batches_ahead_of_a_late_request(registry, lite0, reference):
    """One client keeps 48 requests in flight (all admitted: the tail is the bottleneck);
    another sends one request at a time. Only the batch in the tail and one decoded batch may
    be ahead of the late request: between its send and its answer arrive those two batches of
    the first client's answers, its share of the late request's own batch (3) and what was
    already on the wire; measured 9-12 (median 10-11), against 13-18 (median 15) when the
    daemon formed batches while decoded ones waited for the tail."""
    batch = 4
    server = _server(
        registry,
        decode_workers=1,
        batching=BatchingConfig(max_batch_size=batch, max_queue_delay_ms=2),
    )
    ctx = zmq.Context()
    heavy, late = make_dealer(ctx, server.endpoint), make_dealer(ctx, server.endpoint)
    frames = pack_request(_infer(lite0), reference["payloads"][0])
    sent = 0

    def send_heavy() -> None:
        nonlocal sent
        sent += 1
        heavy.send_multipart([frames[0].replace(b'"id":"', b'"id":"h%d' % sent), frames[1]])

    try:
        for _ in range(48):
            send_heavy()
        poller = zmq.Poller()
        poller.register(heavy, zmq.POLLIN)
        poller.register(late, zmq.POLLIN)
        ahead: List[int] = []
        heavy_answers, probe_sent_at = 0, None
        while len(ahead) < 12:
            events = dict(poller.poll(30_000))
            assert events, "the daemon must answer"
            while heavy.poll(0):
                assert unpack_reply(heavy.recv_multipart()).ok
                heavy_answers += 1
                send_heavy()  # keep 48 in flight
            if late in events:
                assert unpack_reply(late.recv_multipart()).ok
                ahead.append(heavy_answers - probe_sent_at)
                probe_sent_at = None
            if probe_sent_at is None and heavy_answers >= 24 * (len(ahead) + 1):
                probe_sent_at = heavy_answers  # the pipeline is full again
                late.send_multipart(pack_request(_infer(lite0), reference["payloads"][1]))
    finally:
        ctx.destroy(linger=0)
        server.stop()
    assert sorted(ahead)[len(ahead) // 2] <= 3 * batch, sorted(ahead)
