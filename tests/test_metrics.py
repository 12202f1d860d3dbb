"""The daemon's Prometheus metrics and health endpoints, scraped with a real HTTP client."""

from __future__ import annotations

import json
import socket

import pytest
import zmq

from edgecloud.cloud.config import ModelConfig, ServerConfig
from edgecloud.cloud.metrics import MAX_CODEC_LABELS, Metrics, sample_value
from edgecloud.cloud.server import CloudServer
from edgecloud.edge import EdgeClient
from edgecloud.errors import ConfigError


def test_metrics_count_what_the_daemon_answers(lite0, samples_dir, http_get):
    config = ServerConfig(
        bind="tcp://127.0.0.1:0",
        models=[ModelConfig("efficientnet_lite0", ["blocks"])],
        decode_workers=0,
        http_bind="127.0.0.1:0",
    )
    paths = sorted((samples_dir / "images").iterdir())[:6]
    with CloudServer(config) as server:
        assert http_get(server.http_url + "/health/live") == (200, b'{"live": true}\n')
        assert http_get(server.http_url + "/health/ready") == (200, b'{"ready": true}\n')
        ids = server.thread_ids()  # the I/O thread and each tail thread, by native id
        assert "io" in ids and "tail-0" in ids and len(set(ids.values())) == len(ids)
        with EdgeClient(server.endpoint, spec=lite0, cut="blocks") as edge:
            results = [edge.predict(path) for path in paths]
        with zmq.Context() as ctx, ctx.socket(zmq.DEALER) as raw:  # one malformed request
            raw.connect(server.endpoint)
            raw.send_multipart([b"not json", b""])
            assert json.loads(raw.recv_multipart()[0])["code"] == "malformed_header"
        status, body = http_get(server.http_url + "/metrics")
        missing = http_get(server.http_url + "/nothing")
    assert status == 200 and missing[0] == 404
    text = body.decode()
    labels = {"model": "efficientnet_lite0", "cut": "blocks", "codec": edge.codec_spec}
    assert all(r.ok for r in results)
    assert sample_value(text, "edgecloud_request_success", **labels) == 6
    assert sample_value(text, "edgecloud_request_failure", code="malformed_header") == 1
    sent = sum(r.bytes_sent for r in results)
    assert sample_value(text, "edgecloud_received_bytes", **labels) == pytest.approx(sent, abs=0)
    for stage in ("request", "queue", "decode", "tail"):
        assert sample_value(text, f"edgecloud_{stage}_duration_us_count", **labels) == 6
    server_us = sum(r.timings["server_ms"] for r in results) * 1000
    assert sample_value(text, "edgecloud_request_duration_us_sum", **labels) == pytest.approx(
        server_us, rel=1e-3
    )
    batches = sample_value(text, "edgecloud_batch_size_count", model="efficientnet_lite0")
    assert 1 <= batches <= 6
    assert sample_value(text, "edgecloud_batch_size_sum", cut="blocks") == 6


def test_not_ready_before_start_and_http_stops_with_the_daemon(http_get):
    config = ServerConfig(
        bind="tcp://127.0.0.1:0",
        models=[ModelConfig("efficientnet_lite0", ["blocks"])],
        decode_workers=0,
        http_bind="127.0.0.1:0",
    )
    server = CloudServer(config)
    assert server.ready() == (False, "starting: loading tails and codecs")
    server.start()
    url = server.http_url
    assert http_get(url + "/health/ready")[0] == 200
    server.stop()
    with pytest.raises(OSError):
        http_get(url + "/health/live")


def test_bad_or_busy_http_addresses_are_refused():
    with pytest.raises(ConfigError, match="http_bind must be HOST:PORT"):
        ServerConfig(http_bind="8080").validate()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = CloudServer(ServerConfig(bind="tcp://127.0.0.1:0", http_bind=f"127.0.0.1:{port}"))
        with pytest.raises(ConfigError, match=f"cannot serve HTTP on 127.0.0.1:{port}"):
            server.start()


def test_codec_labels_are_bounded():
    metrics = Metrics()
    for i in range(MAX_CODEC_LABELS + 10):
        metrics.answered("m", "c", f"q8-ncc-zstd-l{i}", "ok", 10, {"server_ms": 1.0})
    text = metrics.text().decode()
    assert sample_value(text, "edgecloud_request_success", codec="other") == 10
    codecs = {
        line.split('codec="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("edgecloud_request_success_total")
    }
    assert len(codecs) == MAX_CODEC_LABELS + 1
