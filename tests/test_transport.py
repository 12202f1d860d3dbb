"""Wire protocol and the DEALER client over real loopback sockets (no model needed)."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Callable, List, Optional

import numpy as np
import pytest
import zmq

from edgecloud.errors import ProtocolError, TransportError
from edgecloud.transport import (
    BadRequest,
    ErrorCode,
    FeatureClient,
    Reply,
    Request,
    SocketOptions,
    bound_endpoint,
    make_dealer,
    make_router,
    pack_reply,
    pack_request,
    unpack_reply,
    unpack_request,
)


def _request(**kw) -> Request:
    base = dict(model="m", weights_id="0123456789abcdef", cut="blocks.4", codec="raw")
    base.update(kw)
    return Request(**base)


def test_request_round_trip():
    request = _request(top_k=3, output="tensor")
    frames = pack_request(request, b"payload")
    assert len(frames) == 2 and frames[1] == b"payload"
    parsed, payload = unpack_request(frames)
    assert parsed == request and payload == b"payload"
    assert json.loads(frames[0])["v"] == 1


def test_reply_round_trip_with_tensor():
    tensor = np.arange(12, dtype=np.float32).reshape(3, 4)
    reply = Reply(id="abc", indices=[2, 1], labels=["x", "y"], scores=[0.7, 0.2], tensor=tensor)
    parsed = unpack_reply(pack_reply(reply))
    assert parsed.indices == [2, 1] and parsed.labels == ["x", "y"]
    np.testing.assert_array_equal(parsed.tensor, tensor)
    error = unpack_reply(pack_reply(Reply.error("r1", ErrorCode.QUEUE_FULL, "full")))
    assert not error.ok and error.code == "queue_full" and error.message == "full"


@pytest.mark.parametrize(
    "frames, code",
    [
        ([], ErrorCode.MALFORMED),
        ([os.urandom(64)], ErrorCode.MALFORMED),
        ([b"[1, 2]", b""], ErrorCode.MALFORMED),
        ([b'{"v": 2, "kind": "infer"}', b""], ErrorCode.VERSION),
        ([b'{"v": 1, "evil": "__import__"}', b""], ErrorCode.MALFORMED),
        (
            [b'{"v": 1, "top_k": "5", "model": "m", "cut": "c", "codec": "raw"}', b""],
            ErrorCode.MALFORMED,
        ),
        (
            [b'{"v": 1, "model": "m", "cut": "c", "codec": "raw", "weights_id": "w"}'],
            ErrorCode.MALFORMED,
        ),  # payload frame missing
        (
            [b'{"v": 1, "model": "", "cut": "c", "codec": "raw", "weights_id": "w"}', b""],
            ErrorCode.MALFORMED,
        ),
        ([b'{"v": 1, "kind": "shell"}'], ErrorCode.MALFORMED),
        ([b"{" + b" " * 5000 + b"}", b""], ErrorCode.MALFORMED),
    ],
)
def test_malformed_requests_are_rejected_with_a_code(frames, code):
    with pytest.raises(BadRequest) as info:
        unpack_request(frames)
    assert info.value.code == code
    assert isinstance(info.value, ProtocolError) and str(info.value)


def test_reply_headers_refuse_non_finite_numbers_and_take_numpy_scalars():
    for scores in ([0.5, float("nan")], [np.float32("inf")]):
        with pytest.raises(ValueError):
            pack_reply(Reply(id="r", scores=scores))
    stats = {"uptime_s": np.float64(1.5), "queued": np.int64(3), "http": None}
    header = pack_reply(Reply(id="r", scores=[np.float32(0.25)], info=stats))[0]
    parsed = unpack_reply([header])
    assert parsed.scores == [0.25] and parsed.info == {"uptime_s": 1.5, "queued": 3, "http": None}


@pytest.mark.parametrize("header", [b'{"v": 1, "id": NaN}', b'{"v": 1, "id": "\xff"}', b"\xff{}"])
def test_headers_that_are_not_strict_utf8_json_are_malformed(header):
    with pytest.raises(BadRequest) as info:
        unpack_request([header])
    assert info.value.code == ErrorCode.MALFORMED


def test_malformed_reply_raises_protocol_error():
    with pytest.raises(ProtocolError):
        unpack_reply([b"not json"])
    with pytest.raises(ProtocolError):
        unpack_reply([b'{"v": 1, "id": "x", "tensor_shape": [4]}', b"\x00" * 3])


class EchoRouter:
    """A real ROUTER that answers each request through ``handler`` (None: drop it)."""

    def __init__(self, handler: Callable[[Request, bytes], Optional[Reply]], **opts) -> None:
        self.ctx = zmq.Context()
        self.sock = make_router(self.ctx, "tcp://127.0.0.1:0", SocketOptions(**opts))
        self.endpoint = bound_endpoint(self.sock)
        self.handler = handler
        self.seen: List[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            if not self.sock.poll(50):
                continue
            identity, *frames = self.sock.recv_multipart()
            request, payload = unpack_request(frames)
            self.seen.append(request.id)
            reply = self.handler(request, payload)
            if reply is not None:
                self.sock.send_multipart([identity, *pack_reply(reply)])

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close(0)
        self.ctx.term()


def _echo(request: Request, payload: bytes) -> Reply:
    return Reply(id=request.id, labels=[payload[:8].hex()], scores=[float(len(payload))])


def _slow_echo(request: Request, payload: bytes) -> Reply:
    time.sleep(0.05)  # the next requests are sent meanwhile
    return _echo(request, payload)


def test_client_matches_replies_to_requests():
    server = EchoRouter(_slow_echo)
    try:
        with FeatureClient(server.endpoint, window=8, timeout_s=5) as client:
            payloads = [os.urandom(n) for n in (10, 1000, 70_000, 300_000)]
            futures = [client.submit(_request(), p) for p in payloads]
            for payload, future in zip(payloads, futures):
                reply = future.result(10)
                assert reply.labels == [payload[:8].hex()] and reply.scores == [len(payload)]
                assert reply.timings["rtt_ms"] > 0 and reply.attempts == 1
            assert client.stats.max_in_flight >= 2  # requests really overlap on the wire
    finally:
        server.close()


def test_window_applies_back_pressure():
    release = threading.Event()

    def gated(request: Request, payload: bytes) -> Reply:
        release.wait(30)
        return _echo(request, payload)

    server = EchoRouter(gated)
    try:
        with FeatureClient(server.endpoint, window=2, timeout_s=30) as client:
            first = [client.submit(_request(), b"x") for _ in range(2)]
            third: List = []
            blocked = threading.Thread(target=lambda: third.append(client.submit(_request(), b"y")))
            blocked.start()
            blocked.join(0.5)
            assert blocked.is_alive(), "a third request must wait while the window is full"
            assert client.stats.sent == 2
            release.set()
            for future in first:
                assert future.result(10).ok
            blocked.join(10)
            assert not blocked.is_alive() and third[0].result(10).ok
            assert client.stats.max_in_flight == 2
    finally:
        release.set()
        server.close()


def test_resend_uses_the_same_request_id():
    calls: List[str] = []

    def drop_first(request: Request, payload: bytes) -> Optional[Reply]:
        calls.append(request.id)
        return None if len(calls) == 1 else _echo(request, payload)

    server = EchoRouter(drop_first)
    try:
        with FeatureClient(server.endpoint, timeout_s=0.3, retries=3) as client:
            request = _request()
            reply = client.request(request, b"abc")
            assert reply.ok and reply.attempts == 2
            assert calls == [request.id, request.id]
    finally:
        server.close()


def test_retryable_error_is_retried_then_answered():
    answers = iter([Reply.error("", ErrorCode.QUEUE_FULL, "full"), None])

    def busy_once(request: Request, payload: bytes) -> Reply:
        reply = next(answers, None)
        if reply is not None:
            reply.id = request.id
            return reply
        return _echo(request, payload)

    server = EchoRouter(busy_once)
    try:
        with FeatureClient(server.endpoint, timeout_s=5, retries=2) as client:
            reply = client.request(_request(), b"abc")
            assert reply.ok and reply.attempts == 2
    finally:
        server.close()


def test_no_daemon_gives_transport_error():
    with FeatureClient("tcp://127.0.0.1:1", timeout_s=0.2, retries=1) as client:
        future = client.submit(_request(), b"abc")
        with pytest.raises(TransportError, match="no reply"):
            future.result(10)
        assert client.stats.timeouts == 1


def test_closed_client_refuses_and_fails_pending():
    server = EchoRouter(lambda r, p: None)
    try:
        client = FeatureClient(server.endpoint, timeout_s=30)
        future = client.submit(_request(), b"abc")
        client.close()
        with pytest.raises(TransportError):
            future.result(5)
        with pytest.raises(TransportError):
            client.submit(_request(), b"abc")
    finally:
        server.close()


def test_oversized_message_drops_the_peer_but_not_the_server():
    server = EchoRouter(_echo, max_message_bytes=64 * 1024)
    ctx = zmq.Context()
    try:
        rogue = make_dealer(ctx, server.endpoint)
        rogue.send_multipart(pack_request(_request(), os.urandom(200_000)))
        assert not rogue.poll(1000), "an oversized message must not be answered"
        rogue.close(0)
        with FeatureClient(server.endpoint, timeout_s=5) as client:
            assert client.request(_request(), b"fine").ok
        assert len(server.seen) == 1  # the oversized request never reached the application
    finally:
        ctx.destroy(linger=0)
        server.close()


def test_bound_endpoint_resolves_port_zero():
    ctx = zmq.Context()
    sock = make_router(ctx, "tcp://127.0.0.1:0")
    try:
        endpoint = bound_endpoint(sock)
        assert endpoint.startswith("tcp://127.0.0.1:") and not endpoint.endswith(":0")
        assert sock.getsockopt(zmq.MAXMSGSIZE) == SocketOptions().max_message_bytes
    finally:
        sock.close(0)
        ctx.destroy(linger=0)


def test_request_timestamps_are_set():
    before = time.time()
    request = _request()
    pack_request(request, b"")
    assert before <= request.sent_at <= time.time()


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")
def test_curve_encryption_admits_only_listed_clients(tmp_path):
    from edgecloud.errors import ConfigError
    from edgecloud.transport.security import create_keys, start_authenticator

    _server_pub, server_secret = create_keys(tmp_path / "server", "server")
    allowed_pub, allowed_secret = create_keys(tmp_path / "edges", "allowed")
    _other_pub, other_secret = create_keys(tmp_path / "others", "stranger")
    clients_dir = tmp_path / "allow"
    clients_dir.mkdir()
    (clients_dir / allowed_pub.name).write_bytes(allowed_pub.read_bytes())

    ctx = zmq.Context()
    auth = start_authenticator(ctx, clients_dir)
    sock = make_router(
        ctx, "tcp://127.0.0.1:0", SocketOptions(curve_secret_file=str(server_secret))
    )
    endpoint = bound_endpoint(sock)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            if sock.poll(50):
                identity, *frames = sock.recv_multipart()
                request, payload = unpack_request(frames)
                sock.send_multipart([identity, *pack_reply(_echo(request, payload))])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    server_key = str(tmp_path / "server" / "server.key")
    try:
        good = SocketOptions(
            curve_secret_file=str(allowed_secret), curve_server_key_file=server_key
        )
        with FeatureClient(endpoint, timeout_s=5, options=good) as client:
            assert client.request(_request(), b"secret").ok
        stranger = SocketOptions(
            curve_secret_file=str(other_secret), curve_server_key_file=server_key
        )
        for opts in (stranger, SocketOptions()):  # unlisted key, and no encryption at all
            client = FeatureClient(endpoint, timeout_s=0.5, retries=0, options=opts)
            with client, pytest.raises(TransportError):
                client.request(_request(), b"secret")
        with pytest.raises(ConfigError, match="secret"):
            secure = SocketOptions(curve_secret_file=server_key, curve_server_key_file=server_key)
            FeatureClient(endpoint, options=secure)
    finally:
        stop.set()
        thread.join()
        sock.close(0)
        auth.stop()
        ctx.destroy(linger=0)


def test_bad_endpoints_raise_config_errors():
    from edgecloud.errors import ConfigError

    ctx = zmq.Context()
    try:
        with pytest.raises(ConfigError, match="cannot bind"):
            make_router(ctx, "tcp://not-an-address")
        with pytest.raises(ConfigError, match="cannot connect"):
            make_dealer(ctx, "bogus://x")
    finally:
        ctx.destroy(linger=0)


def test_same_request_id_twice_in_flight_is_refused():
    release = threading.Event()

    def gated(request: Request, payload: bytes) -> Reply:
        release.wait(30)
        return _echo(request, payload)

    server = EchoRouter(gated)
    try:
        with FeatureClient(server.endpoint, timeout_s=30) as client:
            request = _request()
            first = client.submit(request, b"a")
            second = client.submit(request, b"a")
            with pytest.raises(TransportError, match="already in flight"):
                second.result(10)
            release.set()
            assert first.result(10).ok
    finally:
        release.set()
        server.close()
