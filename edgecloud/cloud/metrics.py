"""Prometheus metrics and the health endpoints of the daemon (``--http-bind HOST:PORT``).

Names follow Triton's (``nv_inference_request_success``, ``..._queue_duration_us``, ...)
with the prefix ``edgecloud_``; durations are histograms in microseconds. Every label value
comes from a request the daemon admitted (a served model and cut, a valid codec spec), and
the number of codec label values is bounded, so a client cannot grow the registry.

HTTP (one small threaded server):

- ``GET /metrics``: the Prometheus text format;
- ``GET /health/live``: 200 while the daemon's I/O loop runs;
- ``GET /health/ready``: 200 when every configured tail is loaded and the executor can run
  them (with Triton: the server and each tail's model are ready), 503 with the reason else.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Mapping, Optional, Set, Tuple

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from edgecloud.cloud.config import parse_host_port
from edgecloud.errors import ConfigError
from edgecloud.transport.protocol import ErrorCode

log = logging.getLogger(__name__)
LABELS = ("model", "cut", "codec")
#: 50 us .. 10 s
DURATION_BUCKETS_US = (50, 100, 250, 500, 1e3, 2.5e3, 5e3, 1e4, 2.5e4, 5e4, 1e5, 2.5e5, 1e6, 1e7)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
MAX_CODEC_LABELS = 64
#: reply timings (ms) -> histogram
_DURATIONS = {
    "server_ms": "request",
    "queue_ms": "queue",
    "decode_ms": "decode",
    "tail_ms": "tail",
}


class Metrics:
    """The daemon's counters and histograms, in a registry of their own (several daemons in
    one process do not share them)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.success = Counter(
            "edgecloud_request_success", "Requests answered with a result", LABELS, registry=r
        )
        self.failure = Counter(
            "edgecloud_request_failure",
            "Requests answered with an error, by reply code",
            ("code",),
            registry=r,
        )
        self.received_bytes = Counter(
            "edgecloud_received_bytes", "Bitstream bytes of admitted requests", LABELS, registry=r
        )
        self.durations = {
            stage: Histogram(
                f"edgecloud_{stage}_duration_us",
                f"{stage} duration of successful requests (microseconds)",
                LABELS,
                buckets=DURATION_BUCKETS_US,
                registry=r,
            )
            for stage in _DURATIONS.values()
        }
        self.batch_size = Histogram(
            "edgecloud_batch_size",
            "Requests per tail execution (its count is Triton's exec_count)",
            ("model", "cut"),
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.flood_pauses = Counter(
            "edgecloud_flood_pauses",
            "Times the daemon paused reading a burst of mostly refused requests (a flood)",
            registry=r,
        )
        self._codecs: Set[str] = set()
        self._lock = threading.Lock()

    def _codec(self, codec: str) -> str:
        with self._lock:
            if codec in self._codecs:
                return codec
            if len(self._codecs) < MAX_CODEC_LABELS:
                self._codecs.add(codec)
                return codec
        return "other"

    def answered(
        self,
        model: str,
        cut: str,
        codec: str,
        code: str,
        received_bytes: int,
        timings: Mapping[str, float],
    ) -> None:
        """An admitted request was answered (``code`` "ok" or an error code)."""
        labels = (model, cut, self._codec(codec))
        self.received_bytes.labels(*labels).inc(received_bytes)
        if code != ErrorCode.OK:
            self.failure.labels(code).inc()
            return
        self.success.labels(*labels).inc()
        for key, stage in _DURATIONS.items():
            if key in timings:
                self.durations[stage].labels(*labels).observe(timings[key] * 1000.0)

    def rejected(self, code: str) -> None:
        """A request refused before admission (malformed, too large, unknown model, ...)."""
        self.failure.labels(code).inc()

    def batch(self, model: str, cut: str, size: int) -> None:
        self.batch_size.labels(model, cut).observe(size)

    def text(self) -> bytes:
        return generate_latest(self.registry)


def sample_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples ``name`` with these labels in a Prometheus text exposition (ours
    or Triton's; the parser names counters ``..._total`` also where the text lacks it)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in (name, f"{name}_total") and all(
                sample.labels.get(k) == v for k, v in labels.items()
            ):
                total += sample.value
    return total


class HealthServer:
    """``/metrics``, ``/health/live`` and ``/health/ready`` on ``bind`` (``HOST:PORT``; port 0
    picks a free one, see :attr:`port`)."""

    def __init__(
        self,
        bind: str,
        metrics: Metrics,
        live: Callable[[], bool],
        ready: Callable[[], Tuple[bool, str]],
    ) -> None:
        host, port = parse_host_port(bind, "http_bind")
        handler = _handler(metrics, live, ready)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise ConfigError(f"cannot serve HTTP on {bind}: {exc.strerror or exc}") from None
        self._server.daemon_threads = True
        self.host = host
        self.port = self._server.server_address[1]
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="edgecloud-http", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()


def _handler(
    metrics: Metrics, live: Callable[[], bool], ready: Callable[[], Tuple[bool, str]]
) -> type:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, metrics.text(), CONTENT_TYPE_LATEST)
            elif path == "/health/live":
                ok = live()
                self._json(200 if ok else 503, {"live": ok})
            elif path == "/health/ready":
                ok, reason = ready()
                self._json(
                    200 if ok else 503, {"ready": ok, **({"reason": reason} if reason else {})}
                )
            else:
                self._json(404, {"error": f"no such path {path!r}"})

        def _json(self, status: int, body: dict) -> None:
            self._send(status, json.dumps(body).encode() + b"\n", "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            log.debug("http %s", format % args)

    return Handler
