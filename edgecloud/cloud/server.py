"""The cloud receiver daemon: ROUTER socket, validation, dynamic batching, tails, replies.

Threads: one I/O thread owns the ROUTER (receives, validates, answers errors, duplicates and
pings at once, enqueues work, sends replies); ``config.workers`` threads take batches from the
:class:`DynamicBatcher`, decode the bitstreams and run the tail. Workers hand replies back to
the I/O thread through a queue plus an inproc wake-up socket (ZeroMQ sockets are not
thread-safe).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import queue
import threading
import time
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import torch
import zmq

from edgecloud.cloud.batcher import DynamicBatcher, QueueItem
from edgecloud.cloud.cache import ReplyCache
from edgecloud.cloud.config import ServerConfig
from edgecloud.cloud.stats import ServerStats
from edgecloud.cloud.tails import TailEntry, TailRegistry
from edgecloud.transport.protocol import (
    PROTOCOL_VERSION,
    BadRequest,
    ErrorCode,
    Reply,
    Request,
    pack_reply,
    request_id_of,
    unpack_request,
)
from edgecloud.transport.security import start_authenticator
from edgecloud.transport.sockets import SocketOptions, bound_endpoint, make_router, send_frames

log = logging.getLogger("edgecloud.serve")
_instance_ids = itertools.count()
#: replies that depend on the moment, not on the request: never served from the cache
_UNCACHED = ErrorCode.RETRYABLE | {ErrorCode.TIMEOUT, ErrorCode.INTERNAL}


@dataclasses.dataclass
class _Job:
    request: Request
    payload: Any  # zmq.Frame or bytes
    entry: TailEntry
    received: float


class CloudServer:
    """Serve tails over ZeroMQ.

    >>> server = CloudServer(ServerConfig(bind="tcp://127.0.0.1:0"))
    >>> endpoint = server.start()   # loads the tails, binds, starts the threads
    >>> ...                         # edge clients connect to ``endpoint``
    >>> server.stop()               # finishes queued work, replies to everything
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        registry: Optional[TailRegistry] = None,
        calibrations: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self.config = config.validate()
        self.stats = ServerStats()
        self._registry = registry
        self._calibrations = calibrations
        b = config.batching
        self._batcher = DynamicBatcher(
            b.max_batch_size, b.max_queue_delay_ms / 1000.0, b.queue_size
        )
        self._cache = ReplyCache(config.reply_cache_size, config.reply_cache_ttl_s)
        self._inflight: Dict[str, List[bytes]] = {}
        self._outbox: queue.Queue = queue.Queue()
        self._ctx = zmq.Context()
        self._wake_addr = f"inproc://edgecloud-server-{next(_instance_ids)}"
        self._wake_lock = threading.Lock()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._workers: List[threading.Thread] = []
        self._io: Optional[threading.Thread] = None
        self._auth: Any = None
        self.endpoint: Optional[str] = None

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> str:
        """Load the tails, bind the socket and start serving; returns the bound endpoint."""
        if self.config.torch_threads > 0:
            torch.set_num_threads(self.config.torch_threads)
        if self._registry is None:
            self._registry = TailRegistry.from_config(self.config.models, self.config.device)
        if self._calibrations is None:
            self._calibrations = _load_calibrations(
                self.config.codec_calibrations, self.config.codec_presets
            )
        opts = SocketOptions(
            max_message_bytes=self.config.max_message_bytes,
            heartbeat_ivl_ms=self.config.heartbeat_ivl_ms,
            heartbeat_timeout_ms=self.config.heartbeat_timeout_ms,
            curve_secret_file=self.config.curve_secret_file,
        )
        if self.config.curve_secret_file:
            self._auth = start_authenticator(self._ctx, self.config.curve_clients_dir)
        self._router = make_router(self._ctx, self.config.bind, opts)
        self.endpoint = bound_endpoint(self._router)
        self._wake_rx = self._ctx.socket(zmq.PULL)
        self._wake_rx.bind(self._wake_addr)
        self._wake_tx = self._ctx.socket(zmq.PUSH)
        self._wake_tx.connect(self._wake_addr)
        for i in range(self.config.workers):
            thread = threading.Thread(target=self._work, name=f"edgecloud-tail-{i}", daemon=True)
            thread.start()
            self._workers.append(thread)
        self._io = threading.Thread(target=self._serve, name="edgecloud-io", daemon=True)
        self._io.start()
        b = self.config.batching
        log.info(
            "event=listening endpoint=%s device=%s max_batch_size=%d max_queue_delay_ms=%g "
            "queue_size=%d max_message_bytes=%d",
            self.endpoint,
            self.config.device,
            b.max_batch_size,
            b.max_queue_delay_ms,
            b.queue_size,
            self.config.max_message_bytes,
        )
        if self._auth is not None:
            log.info("event=curve clients=%s", self.config.curve_clients_dir or "any")
        return self.endpoint

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful shutdown: new requests get ``shutting_down``; queued ones are finished and
        answered; then the socket closes."""
        if self._io is None or self._stopped.is_set():
            return
        self._stopping.set()
        self._batcher.close()
        for thread in self._workers:
            thread.join(timeout)
        self._wake()
        self._io.join(timeout)
        with self._wake_lock:
            self._wake_tx.close(0)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()
        log.info("event=stopped %s", json.dumps(self.stats.snapshot()))

    def wait(self) -> None:
        """Block until the server has stopped."""
        self._stopped.wait()

    def __enter__(self) -> CloudServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- I/O thread ---------------------------------------------------------------------------

    def _wake(self) -> None:
        # zmq.Again: wake-ups are already pending, or the I/O thread has finished
        with self._wake_lock, contextlib.suppress(zmq.Again):
            if not self._wake_tx.closed:
                self._wake_tx.send(b"", zmq.NOBLOCK)

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._wake_rx, zmq.POLLIN)
        next_stats = time.monotonic() + self.config.stats_interval_s
        try:
            while True:
                events = dict(poller.poll(200))
                if self._wake_rx in events:
                    while self._wake_rx.poll(0):
                        self._wake_rx.recv()
                self._flush_outbox()
                if self._router in events:
                    for _ in range(256):  # bounded, so replies are not starved
                        if not self._router.poll(0):
                            break
                        frames = self._router.recv_multipart(copy=False)
                        try:
                            self._handle(frames)
                        except Exception:  # a bug must not take the daemon down
                            log.exception("event=handle_failed")
                if self._stopping.is_set() and not any(t.is_alive() for t in self._workers):
                    self._flush_outbox()
                    break
                if time.monotonic() >= next_stats:
                    next_stats = time.monotonic() + self.config.stats_interval_s
                    log.info("event=stats %s", json.dumps(self.stats.snapshot()))
        finally:
            self._router.close(0)
            self._wake_rx.close(0)
            self._stopped.set()

    def _handle(self, frames: List[zmq.Frame]) -> None:
        received = time.perf_counter()
        identity = frames[0].bytes
        body = frames[1:]
        try:
            request, payload = unpack_request(body)
        except BadRequest as exc:
            self._reject(identity, request_id_of([f.bytes for f in body[:1]]), exc)
            return
        if request.kind == "ping":
            self._send(identity, Reply(id=request.id, info=self._describe()))
            return
        if request.kind == "stats":
            self._send(identity, Reply(id=request.id, info=self.stats.snapshot()))
            return
        if self._stopping.is_set():
            self._reject(
                identity, request.id, BadRequest(ErrorCode.SHUTTING_DOWN, "daemon is stopping")
            )
            return
        cached = self._cache.get(request.id)
        if cached is not None:
            self.stats.cache_hits += 1
            self._send(identity, dataclasses.replace(cached, cached=True))
            return
        waiting = self._inflight.get(request.id)
        if waiting is not None:  # a resend of a request still being computed
            if identity not in waiting:
                waiting.append(identity)
            return
        try:
            entry = self._registry.get(request.model, request.cut)
            if request.weights_id != entry.weights_id:
                raise BadRequest(
                    ErrorCode.WEIGHTS_MISMATCH,
                    f"edge weights {request.weights_id} != cloud weights {entry.weights_id} "
                    f"for {request.model}",
                )
            if not self._batcher.put(
                (request.model, request.cut), _Job(request, payload, entry, received)
            ):
                raise BadRequest(
                    ErrorCode.QUEUE_FULL,
                    f"queue is full ({self.config.batching.queue_size} requests)",
                )
        except BadRequest as exc:
            self._reject(identity, request.id, exc)
            return
        self._inflight[request.id] = [identity]

    def _reject(self, identity: bytes, request_id: str, exc: BadRequest) -> None:
        log.warning(
            "event=rejected code=%s id=%s peer=%s message=%s",
            exc.code,
            request_id or "-",
            identity.hex(),
            json.dumps(str(exc)),
        )
        self.stats.count(exc.code)
        self._send(identity, Reply.error(request_id, exc.code, str(exc)))

    def _send(self, identity: bytes, reply: Reply) -> None:
        try:
            frames = pack_reply(reply)
        except ValueError as exc:  # e.g. a non-finite score: answer, do not crash
            log.error("event=reply_unpackable id=%s error=%s", reply.id, exc)
            frames = pack_reply(Reply.error(reply.id, ErrorCode.INTERNAL, f"bad reply: {exc}"))
        try:
            send_frames(self._router, [identity, *frames], zmq.NOBLOCK)
        except zmq.Again:
            self.stats.unroutable += 1
            log.warning("event=reply_dropped reason=hwm id=%s peer=%s", reply.id, identity.hex())
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            self.stats.unroutable += 1
            log.info("event=reply_dropped reason=peer_gone id=%s peer=%s", reply.id, identity.hex())

    def _flush_outbox(self) -> None:
        while True:
            try:
                reply = self._outbox.get_nowait()
            except queue.Empty:
                return
            self.stats.count(reply.code)
            if reply.ok:
                self.stats.record(reply.timings)
            if reply.code not in _UNCACHED:
                self._cache.put(reply.id, reply)
            for identity in self._inflight.pop(reply.id, []):
                self._send(identity, reply)

    def _describe(self) -> Dict[str, Any]:
        b = self.config.batching
        return {
            "protocol": PROTOCOL_VERSION,
            "models": self._registry.describe(),
            "device": self.config.device,
            "max_message_bytes": self.config.max_message_bytes,
            "max_batch_size": b.max_batch_size,
            "max_queue_delay_ms": b.max_queue_delay_ms,
        }

    # -- worker threads -----------------------------------------------------------------------

    def _reply(self, reply: Reply) -> None:
        self._outbox.put(reply)
        self._wake()

    def _work(self) -> None:
        while True:
            batch = self._batcher.get_batch()
            if batch is None:
                return
            try:
                self._run_batch(batch)
            except Exception as exc:  # a bug or a device failure: answer, log, keep serving
                log.exception("event=batch_failed size=%d", len(batch))
                for item in batch:
                    self._reply(Reply.error(item.value.request.id, ErrorCode.INTERNAL, str(exc)))

    def _run_batch(self, batch: List[QueueItem]) -> None:
        from edgecloud.codec import decode_bitstream

        start = time.perf_counter()
        timeout = self.config.batching.request_timeout_s
        jobs: List[_Job] = []
        features: List[np.ndarray] = []
        decode_ms: List[float] = []
        for item in batch:
            job: _Job = item.value
            if start - job.received > timeout:
                self._reply(
                    Reply.error(
                        job.request.id,
                        ErrorCode.TIMEOUT,
                        f"request waited {start - job.received:.1f} s in the queue "
                        f"(limit {timeout:g} s)",
                    )
                )
                continue
            t0 = time.perf_counter()
            try:
                feature = decode_bitstream(
                    job.payload.bytes if isinstance(job.payload, zmq.Frame) else job.payload,
                    self._calibrations,
                )
            except Exception as exc:  # the codec names the problem; the daemon keeps going
                self._reply(
                    Reply.error(
                        job.request.id, ErrorCode.BAD_BITSTREAM, f"{type(exc).__name__}: {exc}"
                    )
                )
                continue
            feature = np.asarray(feature, dtype=np.float32)
            if feature.ndim == len(job.entry.shape) + 1 and feature.shape[0] == 1:
                feature = feature[0]
            if not np.isfinite(feature).all():
                self._reply(
                    Reply.error(
                        job.request.id,
                        ErrorCode.BAD_BITSTREAM,
                        "decoded feature contains NaN or infinity",
                    )
                )
                continue
            if tuple(feature.shape) != job.entry.shape:
                self._reply(
                    Reply.error(
                        job.request.id,
                        ErrorCode.SHAPE_MISMATCH,
                        f"feature shape {list(feature.shape)} != {list(job.entry.shape)} "
                        f"expected at cut {job.entry.cut}",
                    )
                )
                continue
            jobs.append(job)
            features.append(feature)
            decode_ms.append((time.perf_counter() - t0) * 1000.0)
        if not jobs:
            return
        entry = jobs[0].entry
        t0 = time.perf_counter()
        with torch.inference_mode():
            x = torch.from_numpy(np.stack(features)).to(self._registry.device)
            logits = entry.tail(x).float()
            probs = torch.softmax(logits, dim=1)
            logits = logits.cpu().numpy()
            probs = probs.cpu().numpy()
        tail_ms = (time.perf_counter() - t0) * 1000.0
        self.stats.record_batch(len(jobs))
        done = time.perf_counter()
        for i, job in enumerate(jobs):
            request = job.request
            k = min(request.top_k, probs.shape[1])
            order = np.argsort(-probs[i], kind="stable")[:k]
            reply = Reply(
                id=request.id,
                indices=[int(j) for j in order],
                labels=[entry.labels[j] if j < len(entry.labels) else str(j) for j in order],
                scores=[round(float(probs[i, j]), 6) for j in order],
                timings={
                    "queue_ms": round((start - job.received) * 1000.0, 3),
                    "decode_ms": round(decode_ms[i], 3),
                    "tail_ms": round(tail_ms, 3),
                    "batch_size": len(jobs),
                    "server_ms": round((done - job.received) * 1000.0, 3),
                },
            )
            if request.output == "tensor":
                reply.tensor = logits[i]
            self._reply(reply)


def _load_calibrations(paths: List[str], presets: bool) -> Dict[str, Any]:
    """The shipped presets (if ``presets``) plus the given files (these win on equal ids)."""
    from edgecloud.codec import CodecCalibration
    from edgecloud.presets import preset_calibrations

    calibrations = dict(preset_calibrations()) if presets else {}
    for path in paths:
        calibration = CodecCalibration.load(path)
        calibrations[calibration.id] = calibration
    return calibrations
