"""The cloud receiver daemon: wires front, admission, decode, executor and replies together.

Data flows one way::

    front (ROUTER) -> admission (limits, fair queue) -> decode -> executor (tail)
          -> replies -> front

Threads: one I/O thread owns the :class:`~edgecloud.cloud.front.Front` and everything that is
not thread-safe (admission, the reply book, the rate-limited log): it receives, validates,
admits, answers errors, duplicates, pings and stats at once, forms fair batches and hands
them to ``config.workers`` worker threads, which decode a batch into one array, run the tail
and hand the replies back (a queue plus a wake-up of the front).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import queue
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
import zmq

from edgecloud.cloud.admission import Admission, ClientKey
from edgecloud.cloud.config import ServerConfig, message_limit
from edgecloud.cloud.decode import decode_batch, precheck
from edgecloud.cloud.executors import TailExecutor, TorchExecutor
from edgecloud.cloud.front import Front, Incoming
from edgecloud.cloud.ratelog import RateLimitedLog
from edgecloud.cloud.replies import ReplyBook, ReplyKey
from edgecloud.cloud.stats import ServerStats
from edgecloud.cloud.tails import TailEntry, TailRegistry
from edgecloud.transport.protocol import (
    MAX_FRAMES,
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
from edgecloud.transport.sockets import SocketOptions

log = logging.getLogger("edgecloud.serve")
#: replies that depend on the moment, not on the request: never served from the cache
_UNCACHED = ErrorCode.RETRYABLE | {ErrorCode.TIMEOUT, ErrorCode.INTERNAL}
_batch_ids = itertools.count()
FINAL_LINGER_MS = 500
#: after a reply to a peer is dropped at the high-water mark (the peer reads none), its new
#: requests are refused for this long instead of computed for nobody
STALL_S = 1.0


@dataclasses.dataclass
class _Job:
    request: Request
    payload: Any  # memoryview of the received frame
    entry: TailEntry
    received: float
    routing_id: bytes
    client: ClientKey

    @property
    def reply_key(self) -> ReplyKey:
        return (self.client, self.request.id)


class CloudServer:
    """Serve tails over ZeroMQ.

    >>> server = CloudServer(ServerConfig(bind="tcp://127.0.0.1:0"))
    >>> endpoint = server.start()   # loads the tails, binds, starts the threads
    >>> ...                         # edge clients connect to ``endpoint``
    >>> server.stop()               # drains queued work (drain_timeout_s), answers everything
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        registry: Optional[TailRegistry] = None,
        calibrations: Optional[Mapping[str, Any]] = None,
        executor: Optional[TailExecutor] = None,
    ) -> None:
        self.config = config.validate()
        self.stats = ServerStats()
        self._registry = registry
        self._calibrations = calibrations
        self._executor = executor
        b = config.batching
        self._admission = Admission(
            config.admission, b.queue_size, b.max_batch_size, b.max_queue_delay_ms / 1000.0
        )
        self._replies = ReplyBook(
            config.reply_cache_size, config.reply_cache_bytes, config.reply_cache_ttl_s
        )
        self._rejections = RateLimitedLog(log)
        self._work: queue.Queue = queue.Queue()
        self._results: queue.Queue = queue.Queue()
        self._outstanding: Dict[int, List[_Job]] = {}
        self._stalled: Dict[bytes, float] = {}  # routing id -> refuse work until
        self._ctx = zmq.Context()
        self._stop_requested = threading.Event()
        self._drain_deadline = 0.0
        self._stopped = threading.Event()
        self._workers: List[threading.Thread] = []
        self._io: Optional[threading.Thread] = None
        self._auth: Any = None
        self._front: Optional[Front] = None
        self.max_message_bytes = 0
        self.endpoint: Optional[str] = None

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> str:
        """Load the tails, bind the socket and start serving; returns the bound endpoint."""
        config = self.config
        if config.torch_threads > 0:
            torch.set_num_threads(config.torch_threads)
        if self._registry is None:
            self._registry = TailRegistry.from_config(config.models, config.device)
        if self._calibrations is None:
            self._calibrations = _load_calibrations(config.codec_calibrations, config.codec_presets)
        if self._executor is None:
            self._executor = TorchExecutor(self._registry.device)
        self._warm_up()
        self.max_message_bytes = message_limit(config, self._registry.max_elements())
        opts = SocketOptions(
            max_message_bytes=self.max_message_bytes,
            keepalive_idle_s=config.keepalive_idle_s,
            curve_secret_file=config.curve_secret_file,
        )
        if config.curve_secret_file:
            self._auth = start_authenticator(self._ctx, config.curve_clients_dir)
        self._front = Front(self._ctx, config.bind, opts, curve=bool(config.curve_secret_file))
        self.endpoint = self._front.endpoint
        for i in range(config.workers):
            thread = threading.Thread(target=self._worker, name=f"edgecloud-tail-{i}", daemon=True)
            thread.start()
            self._workers.append(thread)
        self._io = threading.Thread(target=self._serve, name="edgecloud-io", daemon=True)
        self._io.start()
        b, a = config.batching, config.admission
        log.info(
            "event=listening endpoint=%s device=%s max_batch_size=%d max_queue_delay_ms=%g "
            "queue_size=%d queue_bytes=%d max_inflight_per_client=%d rate_per_client=%g "
            "max_message_bytes=%d drain_timeout_s=%g",
            self.endpoint,
            config.device,
            b.max_batch_size,
            b.max_queue_delay_ms,
            b.queue_size,
            a.queue_bytes,
            a.max_inflight_per_client,
            a.rate_per_client,
            self.max_message_bytes,
            config.drain_timeout_s,
        )
        if self._auth is not None:
            log.info("event=curve clients=%s", config.curve_clients_dir or "any")
        return self.endpoint

    def _warm_up(self) -> None:
        """One batch through every tail and one round trip through every calibrated codec
        before the socket opens, so that the first requests do not pay for first calls
        (operator selection, codec tables, imports)."""
        from edgecloud.codec import FeatureCodec

        for entry in self._registry.entries():
            self._executor.run(entry, np.zeros((1, *entry.shape), dtype=np.float32))
        for calibration in self._calibrations.values():
            codec = FeatureCodec.from_spec(calibration.spec, calibration)
            codec.decode(codec.encode(np.zeros((calibration.channels, 2, 2), np.float32)))

    def stop(self, drain_timeout_s: Optional[float] = None) -> None:
        """Stop: new requests get ``shutting_down``; queued ones are computed and answered for
        at most ``drain_timeout_s`` (default: the config's), the rest get ``shutting_down``;
        then the socket closes."""
        if self._io is None or self._stopped.is_set():
            return
        drain = self.config.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        self._drain_deadline = time.perf_counter() + drain
        self._stop_requested.set()
        self._front.wake()
        self._io.join(drain + 5.0)
        for _ in self._workers:
            self._work.put(None)
        for thread in self._workers:
            thread.join(1.0)
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

    def _serve(self) -> None:
        front = self._front
        next_stats = time.monotonic() + self.config.stats_interval_s
        try:
            while True:
                readable, _woken = front.poll(self._poll_timeout_ms())
                self._collect_results()
                if readable:
                    for i in range(256):  # bounded, so replies are not starved
                        message = front.receive()
                        if message is None:
                            break
                        try:
                            self._handle(message)
                        except Exception:  # a bug must not take the daemon down
                            log.exception("event=handle_failed")
                        if i % 16 == 15:  # under a flood, keep the workers fed
                            self._collect_results()
                            self._dispatch()
                if self._stop_requested.is_set() and self._drained():
                    break
                self._dispatch()
                now = time.monotonic()
                if now >= next_stats:
                    next_stats = now + self.config.stats_interval_s
                    log.info("event=stats %s", json.dumps(self.stats.snapshot()))
                self._rejections.flush()
        except Exception:  # pragma: no cover - a bug in the loop itself; logged, then stop
            log.exception("event=io_loop_failed")
        finally:
            self._rejections.flush(force=True)
            front.close(linger_ms=FINAL_LINGER_MS)  # the last replies still go out
            self._stopped.set()

    def _poll_timeout_ms(self) -> int:
        deadline = self._admission.next_deadline()
        if deadline is None or len(self._outstanding) > self.config.workers:
            return 200
        return max(0, min(200, int((deadline - time.perf_counter()) * 1000) + 1))

    def _handle(self, message: Incoming) -> None:
        received = time.perf_counter()
        routing_id = message.routing_id
        if len(message.frames) > MAX_FRAMES or message.size > self.max_message_bytes:
            request_id = request_id_of([f.buffer for f in message.frames[:1]])
            code = ErrorCode.TOO_LARGE if message.size > self.max_message_bytes else None
            self._reject(
                message,
                request_id,
                BadRequest(
                    code or ErrorCode.MALFORMED,
                    f"request has {len(message.frames)} frames and {message.size} bytes "
                    f"(at most {MAX_FRAMES} frames and {self.max_message_bytes} bytes)",
                ),
            )
            return
        body = [f.buffer for f in message.frames]
        try:
            request, payload = unpack_request(body)
        except BadRequest as exc:
            self._reject(message, request_id_of(body[:1]), exc)
            return
        if request.kind == "ping":
            self._send(routing_id, Reply(id=request.id, info=self._describe()))
            return
        if request.kind == "stats":
            self._send(routing_id, Reply(id=request.id, info=self._stats()))
            return
        if self._stop_requested.is_set():
            self._reject(
                message, request.id, BadRequest(ErrorCode.SHUTTING_DOWN, "daemon is stopping")
            )
            return
        key = (message.client, request.id)
        cached = self._replies.get(key)
        if cached is not None:
            self.stats.cache_hits += 1
            self._send(routing_id, dataclasses.replace(cached, cached=True))
            return
        if self._replies.waiting(key) is not None:  # a resend of a request being computed
            self._replies.attach(key, routing_id)
            return
        try:
            stalled = self._stalled.get(routing_id)
            if stalled is not None and received < stalled:
                raise BadRequest(ErrorCode.QUEUE_FULL, "replies to this client are not being read")
            entry = self._registry.get(request.model, request.cut)
            if request.weights_id != entry.weights_id:
                raise BadRequest(
                    ErrorCode.WEIGHTS_MISMATCH,
                    f"edge weights {request.weights_id} != cloud weights {entry.weights_id} "
                    f"for {request.model}",
                )
            self._admission.check(message.client, len(payload))  # cheap refusals first
            precheck(payload, entry.shape, self._calibrations)
            job = _Job(request, payload, entry, received, routing_id, message.client)
            self._admission.admit(message.client, (entry.model, entry.cut), job, len(payload))
        except BadRequest as exc:
            self._reject(message, request.id, exc)
            return
        self._replies.start(key, routing_id)

    def _reject(self, message: Incoming, request_id: str, exc: BadRequest) -> None:
        routing_id = message.routing_id
        self._rejections.log(
            logging.WARNING,
            exc.code,
            "event=rejected code=%s id=%s peer=%s message=%s",
            exc.code,
            request_id or "-",
            routing_id.hex(),
            json.dumps(str(exc)),
        )
        self.stats.count(exc.code)
        self._send(routing_id, Reply.error(request_id, exc.code, str(exc)))

    def _send(self, routing_id: bytes, reply: Reply) -> int:
        """Send a reply; returns its size in bytes."""
        try:
            frames = pack_reply(reply)
        except ValueError as exc:  # e.g. a non-finite score: answer, do not crash
            log.error("event=reply_unpackable id=%s error=%s", reply.id, exc)
            frames = pack_reply(Reply.error(reply.id, ErrorCode.INTERNAL, f"bad reply: {exc}"))
        dropped = self._front.send(routing_id, frames)
        if dropped is not None:
            self.stats.unroutable += 1
            if dropped == "hwm":  # a peer that does not read: compute nothing for it a while
                self._stalled[routing_id] = time.perf_counter() + STALL_S
                if len(self._stalled) > 4096:
                    now = time.perf_counter()
                    self._stalled = {k: t for k, t in self._stalled.items() if t > now}
            self._rejections.log(
                logging.INFO,
                f"reply_dropped:{dropped}",
                "event=reply_dropped reason=%s id=%s peer=%s",
                dropped,
                reply.id,
                routing_id.hex(),
            )
        return sum(len(f) for f in frames)

    def _finish(self, job: _Job, reply: Reply) -> None:
        """Count, cache and send the reply of an admitted request to everyone waiting."""
        self.stats.count(reply.code)
        if reply.ok:
            self.stats.record(reply.timings)
        self._admission.release(job.client)
        size = 0
        for routing_id in self._replies.finish(job.reply_key):
            size = self._send(routing_id, reply)
        if reply.code not in _UNCACHED:
            self._replies.put(job.reply_key, reply, size or len(pack_reply(reply)[0]))

    def _dispatch(self) -> None:
        """Hand due batches to the workers (one more than there are workers, so that none
        waits for the I/O thread); requests that waited too long get ``timeout``."""
        draining = self._stop_requested.is_set()
        timeout = self.config.batching.request_timeout_s
        # one batch more than workers: the next is ready when a worker finishes
        while len(self._outstanding) <= self.config.workers:
            now = time.perf_counter()
            due = self._admission.next_batch(now, flush=draining)
            if due is None:
                return
            jobs: List[_Job] = []
            for queued in due[1]:
                job: _Job = queued.item
                waited = now - job.received
                if waited > timeout:
                    self._finish(
                        job,
                        Reply.error(
                            job.request.id,
                            ErrorCode.TIMEOUT,
                            f"request waited {waited:.1f} s in the queue (limit {timeout:g} s)",
                        ),
                    )
                else:
                    jobs.append(job)
            if jobs:
                batch_id = next(_batch_ids)
                self._outstanding[batch_id] = jobs
                self._work.put((batch_id, jobs))

    def _collect_results(self) -> None:
        while True:
            try:
                batch_id, replies = self._results.get_nowait()
            except queue.Empty:
                return
            jobs = self._outstanding.pop(batch_id, None)
            if jobs is None:  # abandoned at the drain deadline: already answered
                continue
            for job, reply in zip(jobs, replies):
                self._finish(job, reply)

    def _drained(self) -> bool:
        """While stopping: True once everything admitted is answered, or at the deadline
        (whatever is left then is answered ``shutting_down``)."""
        if not self._admission.queued and not self._outstanding:
            return True
        if time.perf_counter() < self._drain_deadline:
            return False
        left: List[_Job] = [q.item for q in self._admission.drain()]
        for jobs in self._outstanding.values():
            left.extend(jobs)
        self._outstanding.clear()
        for job in left:
            self._finish(
                job,
                Reply.error(
                    job.request.id,
                    ErrorCode.SHUTTING_DOWN,
                    f"daemon stopped before this request was computed "
                    f"(drain_timeout_s {self.config.drain_timeout_s:g})",
                ),
            )
        return True

    def _describe(self) -> Dict[str, Any]:
        b, a = self.config.batching, self.config.admission
        return {
            "protocol": PROTOCOL_VERSION,
            "models": self._registry.describe(),
            "device": self.config.device,
            **self._executor.describe(),
            "max_message_bytes": self.max_message_bytes,
            "max_batch_size": b.max_batch_size,
            "max_queue_delay_ms": b.max_queue_delay_ms,
            "max_inflight_per_client": a.max_inflight_per_client,
            "rate_per_client": a.rate_per_client,
            "calibrations": {
                cal.id: {"spec": cal.spec, "hash": cal.hash[:16], **_calibration_scope(cal)}
                for cal in self._calibrations.values()
            },
        }

    def _stats(self) -> Dict[str, Any]:
        return {
            **self.stats.snapshot(),
            "queued": self._admission.queued,
            "queued_bytes": self._admission.queued_bytes,
            "reply_cache_entries": len(self._replies),
            "reply_cache_bytes": self._replies.bytes,
            "log_lines_suppressed": self._rejections.total_suppressed,
        }

    # -- worker threads -----------------------------------------------------------------------

    def _worker(self) -> None:
        while True:
            task: Optional[Tuple[int, List[_Job]]] = self._work.get()
            if task is None:
                return
            batch_id, jobs = task
            try:
                replies = self._compute(jobs)
            except Exception as exc:  # a bug or a device failure: answer, log, keep serving
                log.exception("event=batch_failed size=%d", len(jobs))
                replies = [
                    Reply.error(job.request.id, ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
                    for job in jobs
                ]
            self._results.put((batch_id, replies))
            self._front.wake()

    def _compute(self, jobs: List[_Job]) -> List[Reply]:
        start = time.perf_counter()
        entry = jobs[0].entry
        features, failures, decode_ms = decode_batch(
            [job.payload for job in jobs], entry.shape, self._calibrations
        )
        replies: List[Optional[Reply]] = [
            None if failure is None else Reply.error(job.request.id, *failure)
            for job, failure in zip(jobs, failures)
        ]
        good = [i for i, failure in enumerate(failures) if failure is None]
        if not good:
            return replies  # type: ignore[return-value]
        t0 = time.perf_counter()
        logits = self._executor.run(entry, features)
        tail_ms = (time.perf_counter() - t0) * 1000.0
        self.stats.record_batch(len(good))
        top_k = [jobs[i].request.top_k for i in good]
        indices, scores = top_k_softmax(logits, max(top_k))
        done = time.perf_counter()
        for row, i in enumerate(good):
            job = jobs[i]
            k = top_k[row]
            idx = indices[row, :k]
            reply = Reply(
                id=job.request.id,
                indices=idx.tolist(),
                labels=[entry.labels[j] if j < len(entry.labels) else str(j) for j in idx],
                scores=[round(float(s), 6) for s in scores[row, :k]],
                timings={
                    "queue_ms": round((start - job.received) * 1000.0, 3),
                    "decode_ms": round(decode_ms[i], 3),
                    "tail_ms": round(tail_ms, 3),
                    "batch_size": len(good),
                    "server_ms": round((done - job.received) * 1000.0, 3),
                },
            )
            if job.request.output == "tensor":
                reply.tensor = logits[row]
            replies[i] = reply
        return replies  # type: ignore[return-value]


def top_k_softmax(logits: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Indices and softmax probabilities of the ``k`` best classes of each row, best first."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    k = min(k, probs.shape[1])
    if k < probs.shape[1]:
        part = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(k), (len(probs), k))
    part_probs = np.take_along_axis(probs, part, axis=1)
    order = np.argsort(-part_probs, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_probs, order, axis=1)


def _calibration_scope(calibration: Any) -> Dict[str, Any]:
    meta = calibration.meta
    return {key: meta[key] for key in ("model", "cut", "weights") if key in meta}


def _load_calibrations(paths: List[str], presets: bool) -> Dict[str, Any]:
    """The shipped presets (if ``presets``) plus the given files (these win on equal ids)."""
    from edgecloud.codec import CodecCalibration
    from edgecloud.presets import preset_calibrations

    calibrations = dict(preset_calibrations()) if presets else {}
    for path in paths:
        calibration = CodecCalibration.load(path)
        calibrations[calibration.id] = calibration
    return calibrations
