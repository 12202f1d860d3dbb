"""The cloud daemon over real loopback sockets with the real EfficientNet-Lite0 tail."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
import zmq

from edgecloud.cloud import BatchingConfig, CloudServer, ServerConfig, TailRegistry
from edgecloud.cloud.config import config_from_dict, load_config
from edgecloud.codec import FeatureCodec, bitstream, peek_header
from edgecloud.errors import ConfigError
from edgecloud.partition import split
from edgecloud.transport import ErrorCode, FeatureClient, Request, make_dealer, pack_request

CUT = "blocks.4"
N_IMAGES = 16


@pytest.fixture(scope="module")
def reference(lite0, sample_images):
    """Head features, full-model logits and top-1 of the first shared images."""
    x = sample_images(N_IMAGES)
    head, _tail = split(lite0, CUT)
    with torch.inference_mode():
        features = head(x).numpy()
        logits = lite0.module(x).numpy()
    return {"features": features, "logits": logits, "top1": logits.argmax(1)}


@pytest.fixture(scope="module")
def registry(lite0):
    registry = TailRegistry("cpu")
    registry.add(lite0, CUT)
    return registry


def _server(registry, workers: int = 1, **batching) -> CloudServer:
    config = ServerConfig(
        bind="tcp://127.0.0.1:0",
        workers=workers,
        batching=BatchingConfig(**batching),
        max_message_bytes=1024 * 1024,
    )
    server = CloudServer(config, registry=registry)
    server.start()
    return server


@pytest.fixture(scope="module")
def server(registry):
    server = _server(registry, workers=2, max_batch_size=8, max_queue_delay_ms=5)
    yield server
    server.stop()


def _infer(lite0, codec="raw", **kw) -> Request:
    return Request(model=lite0.name, weights_id=lite0.weights_id, cut=CUT, codec=codec, **kw)


@pytest.mark.parametrize("codec", ["raw", "q8-ncc-zstd"])
def test_end_to_end_equals_local_full_model(server, lite0, reference, codec):
    coder = FeatureCodec.from_spec(codec)
    with FeatureClient(server.endpoint, window=4) as client:
        futures = [
            client.submit(_infer(lite0, codec, output="tensor"), coder.encode(f))
            for f in reference["features"]
        ]
        replies = [f.result(60) for f in futures]
    assert all(r.ok for r in replies), [r.message for r in replies if not r.ok]
    top1 = [r.indices[0] for r in replies]
    np.testing.assert_array_equal(top1, reference["top1"])
    assert replies[0].labels[0] == lite0.labels[reference["top1"][0]]
    logits = np.stack([r.tensor for r in replies])
    tol = 1e-3 if codec == "raw" else 0.5
    np.testing.assert_allclose(logits, reference["logits"], atol=tol, rtol=0)
    for r in replies:
        assert {"decode_ms", "queue_ms", "tail_ms", "server_ms", "batch_size"} <= set(r.timings)


def test_eight_concurrent_clients_are_batched_and_answered(server, lite0, reference):
    coder = FeatureCodec.from_spec("q8-ncc-zstd")
    payloads = [coder.encode(f) for f in reference["features"]]
    results: List[List] = [None] * 8  # type: ignore[list-item]
    start = threading.Barrier(8)

    def edge(k: int) -> None:
        with FeatureClient(server.endpoint, window=4) as client:
            start.wait()
            order = [(k + i) % N_IMAGES for i in range(N_IMAGES // 2)]
            futures = [(i, client.submit(_infer(lite0, "q8-ncc-zstd"), payloads[i])) for i in order]
            results[k] = [(i, f.result(120)) for i, f in futures]

    threads = [threading.Thread(target=edge, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    answers = [pair for per_client in results for pair in per_client]
    assert len(answers) == 8 * N_IMAGES // 2
    for i, reply in answers:
        assert reply.ok and reply.indices[0] == reference["top1"][i]
    assert max(reply.timings["batch_size"] for _i, reply in answers) > 1


@pytest.mark.parametrize("wait_when_idle", [False, True])
def test_an_idle_daemon_starts_a_batch_at_once(registry, lite0, reference, wait_when_idle):
    """max_queue_delay_ms is a wait for more requests while a batch computes; with nothing
    computing a request starts at once, unless wait_when_idle (Triton's rule)."""
    payload = FeatureCodec.from_spec("q8-ncc-zstd").encode(reference["features"][0])
    server = _server(
        registry, max_batch_size=8, max_queue_delay_ms=600, wait_when_idle=wait_when_idle
    )
    try:
        with FeatureClient(server.endpoint, window=1) as client:
            replies = [client.submit(_infer(lite0, "q8-ncc-zstd"), payload).result(30)]
            replies.append(client.submit(_infer(lite0, "q8-ncc-zstd"), payload).result(30))
    finally:
        server.stop()
    assert all(r.ok and r.timings["batch_size"] == 1 for r in replies)
    queue_ms = [r.timings["queue_ms"] for r in replies]
    if wait_when_idle:
        assert min(queue_ms) >= 550, queue_ms
    else:
        assert max(queue_ms) < 300, queue_ms


def test_bad_input_gets_error_replies_while_good_client_is_served(server, lite0, reference):
    coder = FeatureCodec.from_spec("q8-ncc-zstd")
    good_payload = coder.encode(reference["features"][0])
    stop = threading.Event()
    good: List = []

    def well_behaved() -> None:
        with FeatureClient(server.endpoint, window=2) as client:
            while not stop.is_set():
                good.append(client.request(_infer(lite0, "q8-ncc-zstd"), good_payload))

    thread = threading.Thread(target=well_behaved)
    thread.start()
    ctx = zmq.Context()
    try:
        rogue = make_dealer(ctx, server.endpoint)

        def ask(frames) -> dict:
            rogue.send_multipart(frames)
            assert rogue.poll(30_000), "the daemon must answer bad input"
            from edgecloud.transport import unpack_reply

            reply = unpack_reply(rogue.recv_multipart())
            assert not reply.ok and reply.message
            return reply

        assert ask([os.urandom(100)]).code == ErrorCode.MALFORMED
        assert ask([os.urandom(100), os.urandom(1000)]).code == ErrorCode.MALFORMED
        rng = np.random.default_rng(0)
        for position in rng.integers(0, len(good_payload), size=8):  # single flipped bytes
            damaged = bytearray(good_payload)
            damaged[position] ^= 0xFF
            reply = ask(pack_request(_infer(lite0, "q8-ncc-zstd"), bytes(damaged)))
            assert reply.code == ErrorCode.BAD_BITSTREAM
        truncated = good_payload[: len(good_payload) // 2]
        assert ask(pack_request(_infer(lite0, "q8-ncc-zstd"), truncated)).code == (
            ErrorCode.BAD_BITSTREAM
        )
        assert ask(pack_request(_infer(lite0, "raw"), os.urandom(5000))).code == (
            ErrorCode.BAD_BITSTREAM
        )
        unknown = Request(model="resnet9000", weights_id="x", cut=CUT, codec="raw")
        assert ask(pack_request(unknown, good_payload)).code == ErrorCode.UNKNOWN_MODEL
        wrong_cut = Request(
            model=lite0.name, weights_id=lite0.weights_id, cut="blocks.2", codec="raw"
        )
        assert ask(pack_request(wrong_cut, good_payload)).code == ErrorCode.UNKNOWN_CUT
        wrong_hash = Request(model=lite0.name, weights_id="0" * 16, cut=CUT, codec="raw")
        reply = ask(pack_request(wrong_hash, good_payload))
        assert reply.code == ErrorCode.WEIGHTS_MISMATCH and lite0.weights_id in reply.message
        # a well-formed raw bitstream whose floats are NaN (the encoder refuses to make one)
        zeros = FeatureCodec.from_spec("raw").encode(np.zeros((112, 14, 14), np.float32))
        nan = bitstream.pack(peek_header(zeros), np.full(112 * 14 * 14, np.nan, "<f4").tobytes())
        reply = ask(pack_request(_infer(lite0, "raw"), nan))
        assert reply.code == ErrorCode.BAD_BITSTREAM and "NaN" in reply.message
        small = FeatureCodec.from_spec("raw").encode(np.zeros((112, 7, 7), np.float32))
        assert ask(pack_request(_infer(lite0, "raw"), small)).code == ErrorCode.SHAPE_MISMATCH
        rogue.close(0)
        # oversized: libzmq drops the connection (MAXMSGSIZE = 1 MiB here), no reply
        big = make_dealer(ctx, server.endpoint)
        big.send_multipart(pack_request(_infer(lite0, "raw"), os.urandom(2 * 1024 * 1024)))
        assert not big.poll(1000)
        big.close(0)
        n_before = len(good)
        with FeatureClient(server.endpoint) as client:
            assert client.request(_infer(lite0, "q8-ncc-zstd"), good_payload).ok
        while len(good) <= n_before:  # the well-behaved client still gets answers after it all
            thread.join(0.05)
    finally:
        stop.set()
        thread.join(60)
        ctx.destroy(linger=0)
    assert good and all(r.ok and r.indices[0] == reference["top1"][0] for r in good)


def test_duplicate_request_id_is_answered_from_the_cache(server, lite0, reference):
    payload = FeatureCodec.from_spec("q8-ncc-zstd").encode(reference["features"][1])
    request = _infer(lite0, "q8-ncc-zstd")
    with FeatureClient(server.endpoint) as client:
        first = client.request(request, payload)
        hits = server.stats.cache_hits
        second = client.request(request, payload)
    assert first.ok and not first.cached
    assert second.cached and second.indices == first.indices and second.scores == first.scores
    assert server.stats.cache_hits == hits + 1


def test_ping_and_stats(server, lite0):
    with FeatureClient(server.endpoint) as client:
        info = client.ping().info
        stats = client.request(Request(kind="stats")).info
    assert info["models"][lite0.name][CUT]["weights_id"] == lite0.weights_id
    assert info["models"][lite0.name][CUT]["shape"] == [112, 14, 14]
    assert stats["requests"] > 0 and "server_p50_ms" in stats and "tail_p99_ms" in stats


def test_queue_full_and_timeout_replies(registry, lite0, reference):
    payload = FeatureCodec.from_spec("raw").encode(reference["features"][2])
    server = _server(registry, max_batch_size=1, max_queue_delay_ms=0, queue_size=2)
    try:
        with FeatureClient(server.endpoint, window=32, retries=0, timeout_s=60) as client:
            futures = [client.submit(_infer(lite0), payload) for _ in range(24)]
            codes = [f.result(120).code for f in futures]
        assert ErrorCode.QUEUE_FULL in codes and ErrorCode.OK in codes
        assert set(codes) <= {ErrorCode.QUEUE_FULL, ErrorCode.OK}
    finally:
        server.stop()
    server = _server(registry, max_batch_size=1, request_timeout_s=1e-6)
    try:
        with FeatureClient(server.endpoint) as client:
            reply = client.request(_infer(lite0), payload)
        assert reply.code == ErrorCode.TIMEOUT and "waited" in reply.message
    finally:
        server.stop()


def test_graceful_stop_answers_every_queued_request(registry, lite0, reference):
    payload = FeatureCodec.from_spec("raw").encode(reference["features"][3])
    server = _server(registry, max_batch_size=4, max_queue_delay_ms=2)
    with FeatureClient(server.endpoint, window=16, retries=0, timeout_s=60) as client:
        futures = [client.submit(_infer(lite0), payload) for _ in range(12)]
        while server.stats.snapshot()["requests"] == 0 and not futures[0].done():
            threading.Event().wait(0.01)
        server.stop()
        codes = [f.result(60).code for f in futures]
    assert all(c in (ErrorCode.OK, ErrorCode.SHUTTING_DOWN) for c in codes)
    assert ErrorCode.OK in codes


def test_config_file(tmp_path: Path):
    path = tmp_path / "serve.toml"
    path.write_text(
        'bind = "tcp://0.0.0.0:7000"\ndevice = "cpu"\n[batching]\nmax_batch_size = 4\n'
        '[[models]]\nname = "efficientnet_lite0"\ncuts = ["blocks.4", "blocks.5"]\n'
    )
    config = load_config(path)
    assert config.bind == "tcp://0.0.0.0:7000" and config.batching.max_batch_size == 4
    assert config.models[0].cuts == ["blocks.4", "blocks.5"]
    with pytest.raises(ConfigError, match="unknown keys"):
        config_from_dict({"bnd": "tcp://x"})
    with pytest.raises(ConfigError, match="max_batch_size"):
        config_from_dict({"batching": {"max_batch_size": 0}})
    with pytest.raises(ConfigError, match="wait_when_idle must be true or false"):
        config_from_dict({"batching": {"wait_when_idle": "yes"}})
    with pytest.raises(ConfigError, match="admission.fair_batch_share must be true or false"):
        config_from_dict({"admission": {"fair_batch_share": 1}})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("bind = [")
    with pytest.raises(ConfigError, match="TOML"):
        load_config(tmp_path / "bad.toml")


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")
def test_daemon_with_curve_allow_list(registry, lite0, reference, tmp_path: Path):
    from edgecloud.errors import TransportError
    from edgecloud.transport import SocketOptions
    from edgecloud.transport.security import create_keys

    _pub, server_secret = create_keys(tmp_path, "server")
    edge_pub, edge_secret = create_keys(tmp_path / "clients", "edge1")
    config = ServerConfig(
        bind="tcp://127.0.0.1:0",
        curve_secret_file=str(server_secret),
        curve_clients_dir=str(tmp_path / "clients"),
    )
    server = CloudServer(config, registry=registry)
    server.start()
    try:
        opts = SocketOptions(
            curve_secret_file=str(edge_secret), curve_server_key_file=str(tmp_path / "server.key")
        )
        payload = FeatureCodec.from_spec("raw").encode(reference["features"][0])
        with FeatureClient(server.endpoint, options=opts) as client:
            reply = client.request(_infer(lite0), payload)
        assert reply.ok and reply.indices[0] == reference["top1"][0]
        plain = FeatureClient(server.endpoint, timeout_s=0.5, retries=0)
        with plain, pytest.raises(TransportError):  # no key: the handshake never completes
            plain.request(_infer(lite0), payload)
    finally:
        server.stop()


def test_calibrated_codec_from_config_file(registry, lite0, reference, server, tmp_path: Path):
    from edgecloud.codec import CodecCalibration

    spec = "q4-ccd-rans"
    calibration = CodecCalibration.fit(reference["features"], spec)
    path = calibration.save(tmp_path)
    coder = FeatureCodec.from_spec(spec, calibration=calibration)
    payloads = [coder.encode(f) for f in reference["features"]]
    config = ServerConfig(bind="tcp://127.0.0.1:0", codec_calibrations=[str(path)])
    calibrated = CloudServer(config, registry=registry)
    calibrated.start()
    try:
        with FeatureClient(calibrated.endpoint) as client:
            replies = [client.submit(_infer(lite0, spec), p) for p in payloads]
            top1 = [f.result(60).indices[0] for f in replies]
        assert np.mean(np.asarray(top1) == reference["top1"]) >= 0.75
    finally:
        calibrated.stop()
    with FeatureClient(server.endpoint) as client:  # a daemon without that calibration
        reply = client.request(_infer(lite0, spec), payloads[0])
    assert reply.code == ErrorCode.BAD_BITSTREAM and calibration.id in reply.message
