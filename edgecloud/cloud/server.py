"""The cloud receiver daemon: wires front, admission, decode, executor and replies together.

Data flows one way::

    front (ROUTER) -> admission (limits, fair queue) -> decode -> executor (tail)
          -> replies -> front

Threads and processes: one I/O thread owns the :class:`~edgecloud.cloud.front.Front`, the
:class:`~edgecloud.cloud.decode_pool.DecodePool`'s socket and everything that is not
thread-safe (admission, the reply book, the rate-limited log): it receives, validates, admits,
answers errors, duplicates, pings and stats at once, and forms fair batches. A batch goes to
an idle **decode worker process**, which decodes it into a shared-memory slot; the decoded
batch goes to one of ``config.workers`` tail threads, which run the tail on the slot's array
and hand the replies back (a queue plus a wake-up of the front). With ``decode_workers = 0``
the tail threads decode too (one process, as on a small edge box).
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import json
import logging
import queue
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple

import numpy as np
import torch
import zmq

from edgecloud.cloud.admission import Admission
from edgecloud.cloud.calibrations import load_calibrations
from edgecloud.cloud.compute import Batch, Job, compute
from edgecloud.cloud.config import ServerConfig, decode_workers, message_limit
from edgecloud.cloud.decode import precheck, warm_up_codecs
from edgecloud.cloud.decode_pool import DecodedBatch, DecodePool
from edgecloud.cloud.executors import ExecutorUnavailable, TailExecutor, make_executor
from edgecloud.cloud.front import Front, Incoming
from edgecloud.cloud.metrics import HealthServer, Metrics
from edgecloud.cloud.ratelog import RateLimitedLog
from edgecloud.cloud.replies import ReplyBook
from edgecloud.cloud.stats import ServerStats, thread_cpu_seconds
from edgecloud.cloud.streams import StreamStates
from edgecloud.cloud.tails import TailRegistry
from edgecloud.transport.protocol import (
    MAX_FRAMES,
    PROTOCOL_VERSION,
    BadRequest,
    ErrorCode,
    Reply,
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
#: messages the I/O thread handles before it looks at the other stages again; under a flood
BURST, FLOOD_BURST = 256, 8
#: a full burst with at least this fraction refused at once is a flood: reading pauses for
#: the CPU time the burst took, at most FLOOD_PAUSE_MAX_S
FLOOD_FRACTION, FLOOD_PAUSE_MAX_S = 0.75, 0.002
#: where the OS has no pidfds, how often the I/O thread checks the decode workers
REAP_INTERVAL_S = 0.2
#: stopping, once drained: requests still waiting in libzmq's queues, or arriving until the
#: socket has been quiet this long, are answered shutting_down (for at most STRAGGLERS_MAX_S)
STRAGGLERS_QUIET_MS, STRAGGLERS_MAX_S = 20, 0.25


class CloudServer:
    """Serve tails over ZeroMQ.

    >>> server = CloudServer(ServerConfig(bind="tcp://127.0.0.1:0"))
    >>> endpoint = server.start()   # loads the tails, starts the decode workers, binds
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
        self._tail_queue: queue.Queue = queue.Queue()
        self._results: queue.Queue = queue.Queue()
        self._batches: Dict[int, Batch] = {}  # left the queue, not yet answered
        self._pool: Optional[DecodePool] = None
        self._streams: Optional[StreamStates] = None
        self._sentinels: Set[int] = set()
        self._precision_check: Dict[str, Any] = {}
        self._stalled: Dict[bytes, float] = {}  # routing id -> refuse work until
        self._refused = 0  # requests answered with an error at once
        self._flooded = False  # the last burst was mostly refused
        self._reading_paused_until = 0.0  # perf_counter: a flood is being held back
        self._ctx = zmq.Context()
        self._stop_requested = threading.Event()
        self._drain_deadline = 0.0
        self._stopped = threading.Event()
        self._workers: List[threading.Thread] = []
        self._io: Optional[threading.Thread] = None
        self._auth: Any = None
        self._front: Optional[Front] = None
        self._metrics: Optional[Metrics] = None
        self._http: Optional[HealthServer] = None
        self.max_message_bytes = 0
        self.endpoint: Optional[str] = None

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> str:
        """Load the tails, start the decode workers, bind the socket and start serving;
        returns the bound endpoint."""
        config = self.config
        if config.http_bind:  # first: a bad address fails before minutes of loading
            self._metrics = Metrics()
            self._http = HealthServer(config.http_bind, self._metrics, self.live, self.ready)
            self._http.start()
        if config.torch_threads > 0:
            torch.set_num_threads(config.torch_threads)
        if self._registry is None:
            self._registry = TailRegistry.from_config(config.models, config.device)
        if self._calibrations is None:
            self._calibrations = load_calibrations(config.codec_calibrations, config.codec_presets)
        self._streams = StreamStates(self._calibrations, config.max_streams, config.stream_idle_s)
        if self._executor is None:
            self._executor = make_executor(
                config.executor,
                self._registry.device,
                precision=config.precision,
                threads=config.torch_threads,
                triton_url=config.triton_url,
                triton_timeout_s=config.triton_timeout_s,
            )
        self._check_precision()
        self._warm_up()
        workers = decode_workers(config)
        if workers:
            self._pool = DecodePool(
                self._ctx,
                workers,
                slots=workers + config.workers + 1,  # one per decoder and tail, one waiting
                slot_elements=config.batching.max_batch_size * self._registry.max_elements(),
                calibrations=self._calibrations,
            )
            self._pool.wait_ready()
            self._executor.pin(self._pool.buffers())
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
        if self._pool is not None:
            self._front.watch(self._pool.socket)
            self._watch_sentinels()
        for i in range(config.workers):
            thread = threading.Thread(target=self._worker, name=f"edgecloud-tail-{i}", daemon=True)
            thread.start()
            self._workers.append(thread)
        self._io = threading.Thread(target=self._serve, name="edgecloud-io", daemon=True)
        self._io.start()
        b, a = config.batching, config.admission
        log.info(
            "event=listening endpoint=%s executor=%s device=%s precision=%s decode_workers=%d "
            "max_batch_size=%d max_queue_delay_ms=%g wait_when_idle=%s queue_size=%d "
            "queue_bytes=%d "
            "max_inflight_per_client=%d rate_per_client=%g fair_batch_share=%s "
            "max_message_bytes=%d drain_timeout_s=%g",
            self.endpoint,
            config.executor,
            config.device,
            config.precision,
            workers,
            b.max_batch_size,
            b.max_queue_delay_ms,
            str(b.wait_when_idle).lower(),
            b.queue_size,
            a.queue_bytes,
            a.max_inflight_per_client,
            a.rate_per_client,
            str(a.fair_batch_share).lower(),
            self.max_message_bytes,
            config.drain_timeout_s,
        )
        if self._auth is not None:
            log.info("event=curve clients=%s", config.curve_clients_dir or "any")
        return self.endpoint

    def _check_precision(self) -> None:
        """Below fp32: the tails' top-1 agreement with fp32 on real images (logged, and in
        ``ping``), or a warning that it was not checked."""
        if self.config.precision == "fp32":
            return
        from edgecloud.cloud.precision import check_precision

        self._precision_check = check_precision(
            self._registry,
            self._executor,
            self.config.precision_check_data,
            self.config.precision_check_images,
        )

    def _warm_up(self) -> None:
        """One batch through every tail and one round trip through every calibrated codec
        before the socket opens, so that the first requests do not pay for first calls
        (operator selection, codec tables, imports)."""
        try:
            for entry in self._registry.entries():
                self._executor.run(entry, np.zeros((1, *entry.shape), dtype=np.float32))
        except ExecutorUnavailable as exc:  # serve anyway: not ready until the executor is
            log.warning("event=executor_unavailable at_start=1 message=%s", json.dumps(str(exc)))
        warm_up_codecs(self._calibrations)

    def stop(self, drain_timeout_s: Optional[float] = None) -> None:
        """Stop: new requests get ``shutting_down``; queued ones are computed and answered for
        at most ``drain_timeout_s`` (default: the config's), the rest get ``shutting_down``;
        then the socket closes and the decode workers stop."""
        if self._io is None or self._stopped.is_set():
            return
        drain = self.config.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        self._drain_deadline = time.perf_counter() + drain
        self._stop_requested.set()
        self._front.wake()
        self._io.join(drain + 5.0)
        for _ in self._workers:
            self._tail_queue.put(None)
        for thread in self._workers:
            thread.join(1.0)
        self._executor.close()
        if self._pool is not None:
            self._pool.close()
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()
        if self._http is not None:
            self._http.stop()
        log.info("event=stopped %s", json.dumps(self.stats.snapshot()))

    def thread_ids(self) -> Dict[str, int]:
        """Native ids of the daemon's running threads by role (``io``, ``tail-0``, ...): for
        ``top -H``, ``py-spy`` or per-thread CPU accounting (``benchmarks/bench_io_path.py``)."""
        threads = {"io": self._io} if self._io is not None else {}
        threads.update({f"tail-{i}": t for i, t in enumerate(self._workers)})
        return {name: t.native_id for name, t in threads.items() if t.native_id is not None}

    def live(self) -> bool:
        """False once the I/O loop has ended (``/health/live``); True while loading."""
        return not self._stopped.is_set() and (self._io is None or self._io.is_alive())

    def ready(self) -> Tuple[bool, str]:
        """Whether requests can be served now, and why not (``/health/ready``): every tail
        loaded, serving, not stopping, and the executor able to run every tail."""
        if self._io is None or not self._io.is_alive():
            return False, "starting: loading tails and codecs"
        if self._stop_requested.is_set():
            return False, "stopping"
        return self._executor.ready(self._registry.entries())

    @property
    def http_url(self) -> Optional[str]:
        """``http://HOST:PORT`` of the metrics and health endpoints (None without them)."""
        return self._http.url if self._http is not None else None

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
        next_reap = 0.0
        try:
            while True:
                stopping = self._stop_requested.is_set()
                # one clock reading for both: a pause that ends between two readings must
                # not leave the ROUTER out of a poll that waits 200 ms (every client stalled)
                now = time.perf_counter()
                read = stopping or now >= self._reading_paused_until
                readable, watched = front.poll(self._poll_timeout_ms(now), read=read)
                if watched:
                    self._from_pool(watched)
                self._collect_results()
                if readable:
                    self._read_burst()
                if stopping and self._drained():
                    self._answer_stragglers()
                    break
                self._dispatch()
                mono = time.monotonic()
                no_pidfds = self._pool is not None and not self._pool.sentinels_supported
                if no_pidfds and mono >= next_reap:  # look for dead workers now and then
                    next_reap = mono + REAP_INTERVAL_S
                    self._reap()
                if mono >= next_stats:
                    next_stats = mono + self.config.stats_interval_s
                    log.info("event=stats %s", json.dumps(self._stats()))
                self._rejections.flush()
        except Exception:  # pragma: no cover - a bug in the loop itself; logged, then stop
            log.exception("event=io_loop_failed")
        finally:
            self._rejections.flush(force=True)
            front.close(linger_ms=FINAL_LINGER_MS)  # the last replies still go out
            self._stopped.set()

    def _read_burst(self) -> None:
        """Handle a burst of waiting messages. A full burst that was mostly refused (a
        flood) pauses reading for the CPU time it took (at most FLOOD_PAUSE_MAX_S), and the
        next bursts are short, so refusals take at most about half of this thread (and of
        the GIL the tail threads need) while adding well under a millisecond to others'
        requests: the flood waits in libzmq's queues (libzmq reads the peers' queues in
        turn, so others' requests are not stuck behind it) and meets its high-water mark,
        instead of taking the daemon's time. CPU time, not wall time: a burst stretched by
        a garbage collection or by waiting for the GIL or a core must not stretch the pause
        too (a wall-clock pause once doubled a 150 ms stall for every client)."""
        limit = FLOOD_BURST if self._flooded else BURST
        cpu_started, refused = time.thread_time(), self._refused
        for i in range(limit):
            message = self._front.receive()
            if message is None:
                self._flooded = False
                return
            self._handle_guarded(message)
            if i % 16 == 15:  # under a flood, keep the stages fed
                self._keep_stages_moving()
        # not while stopping: then every request is refused, and each must be answered
        stopping = self._stop_requested.is_set()
        self._flooded = not stopping and self._refused - refused >= FLOOD_FRACTION * limit
        if self._flooded:
            self.stats.flood_pauses += 1
            if self._metrics is not None:
                self._metrics.flood_pauses.inc()
            pause = min(FLOOD_PAUSE_MAX_S, time.thread_time() - cpu_started)
            self._reading_paused_until = time.perf_counter() + pause

    def _answer_stragglers(self) -> None:
        """Stopping, with everything admitted answered: the requests still in libzmq's
        queues, or arriving until the socket is quiet, get ``shutting_down`` instead of being
        dropped with the socket (an edge would wait for its timeout to resend them)."""
        end = time.perf_counter() + STRAGGLERS_MAX_S
        while time.perf_counter() < end:
            message = self._front.receive()
            if message is None:
                if not self._front.poll(STRAGGLERS_QUIET_MS)[0]:
                    return
                continue
            self._handle_guarded(message)

    def _handle_guarded(self, message: Incoming) -> None:
        """:meth:`_handle`, logging instead of raising: a bug must not take the daemon down."""
        try:
            self._handle(message)
        except Exception:
            log.exception("event=handle_failed")

    def _keep_stages_moving(self) -> None:
        """Between received messages: hand decoded batches to the tail, send finished
        replies, start due batches -- so that a flood on the socket delays none of them."""
        if self._pool is not None:
            for decoded in self._pool.receive():
                self._decoded(decoded)
        self._collect_results()
        self._dispatch()

    def _poll_timeout_ms(self, now: float) -> int:
        deadline = self._admission.next_deadline()
        if deadline is None or not self._can_start_batch():
            deadline = now + 0.2
        if self._reading_paused_until > now:
            deadline = min(deadline, self._reading_paused_until)
        return max(0, min(200, int((deadline - now) * 1000) + 1))

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
            header = precheck(payload, entry.shape, self._calibrations)
            job = Job(request, payload, entry, received, routing_id, message.client)
            job.stream_id = header.stream_id
            batch_key = (entry.model, entry.cut, bool(header.stream_id))  # streams apart
            self._admission.admit(message.client, batch_key, job, len(payload))
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
        self._refused += 1
        if self._metrics is not None:
            self._metrics.rejected(exc.code)
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

    def _finish(self, job: Job, reply: Reply) -> None:
        """Count, cache and send the reply of an admitted request to everyone waiting."""
        self.stats.count(reply.code)
        if reply.ok:
            self.stats.record(reply.timings)
        if self._metrics is not None:
            r = job.request
            self._metrics.answered(
                r.model, r.cut, r.codec, reply.code, len(job.payload), reply.timings
            )
        self._admission.release(job.client)
        size = 0
        for routing_id in self._replies.finish(job.reply_key):
            size = self._send(routing_id, reply)
        if reply.code not in _UNCACHED:
            self._replies.put(job.reply_key, reply, size or len(pack_reply(reply)[0]))

    def _fail(self, jobs: List[Job], code: str, message: str) -> None:
        for job in jobs:
            self._finish(job, Reply.error(job.request.id, code, message))

    # -- batches through the stages -----------------------------------------------------------

    def _can_start_batch(self) -> bool:
        if self._pool is not None:  # (a stream batch needs no decode worker, but may wait)
            # a decoded batch already waits for a tail thread: the next one can wait in the
            # fair queue instead, where a late request of another client still joins it
            return self._pool.idle() and self._tail_queue.empty()
        # one batch more than tail threads: the next is ready when a thread finishes
        return len(self._batches) <= self.config.workers

    def _dispatch(self) -> None:
        """Start due batches while a stage can take them; requests that waited too long get
        ``timeout``. With nothing computing, what is queued is due at once (unless
        ``wait_when_idle``): waiting for more would only idle the tail, and while it computes
        the next batch forms anyway."""
        draining = self._stop_requested.is_set()
        b = self.config.batching
        while self._can_start_batch():
            now = time.perf_counter()
            idle = not self._batches and not b.wait_when_idle
            due = self._admission.next_batch(now, flush=draining or idle)
            if due is None:
                return
            jobs: List[Job] = []
            for queued in due[1]:
                job: Job = queued.item
                waited = now - job.received
                if waited > b.request_timeout_s:
                    self._fail(
                        [job],
                        ErrorCode.TIMEOUT,
                        f"request waited {waited:.1f} s in the queue "
                        f"(limit {b.request_timeout_s:g} s)",
                    )
                else:
                    jobs.append(job)
            if not jobs:
                continue
            batch = Batch(next(_batch_ids), jobs, started=now)
            self._batches[batch.id] = batch
            if self._pool is not None and not batch.stream:
                self._pool.submit(batch.id, batch.entry.shape, [job.payload for job in jobs])
            else:
                self._tail_queue.put(batch)

    def _from_pool(self, watched: Set[Any]) -> None:
        """Decoded batches go on to the tail; dead decode workers are replaced and the
        requests they held answered ``internal_error``."""
        pool = self._pool
        if pool.socket in watched:
            for decoded in pool.receive():
                self._decoded(decoded)
        if watched & self._sentinels:
            self._reap()

    def _reap(self) -> None:
        """Replace dead decode workers; answer the batches they held ``internal_error``."""
        for batch_id in self._pool.reap():
            batch = self._batches.pop(batch_id, None)
            if batch is not None:
                self._fail(
                    batch.jobs,
                    ErrorCode.INTERNAL,
                    "the decode worker of this request died; resend it",
                )
        self._watch_sentinels()

    def _decoded(self, decoded: DecodedBatch) -> None:
        batch = self._batches.get(decoded.batch_id)
        if batch is None:  # answered meanwhile (drain deadline)
            self._pool.release(decoded.slot)
            return
        batch.features, batch.failures = decoded.features, decoded.failures
        batch.decode_ms, batch.slot = decoded.decode_ms, decoded.slot
        if len(decoded.features):
            self._tail_queue.put(batch)
            return
        del self._batches[batch.id]  # nothing decoded: answer the failures now
        self._pool.release(decoded.slot)
        for job, failure in zip(batch.jobs, batch.failures):
            self._finish(job, Reply.error(job.request.id, *failure))

    def _watch_sentinels(self) -> None:
        current = set(self._pool.sentinels())
        for fd in self._sentinels - current:
            self._front.unwatch(fd)
        for fd in current - self._sentinels:
            self._front.watch(fd)
        self._sentinels = current

    def _collect_results(self) -> None:
        while True:
            try:
                batch_id, replies = self._results.get_nowait()
            except queue.Empty:
                return
            batch = self._batches.pop(batch_id, None)
            if batch is None:  # abandoned at the drain deadline: already answered
                continue
            if batch.slot is not None:
                self._pool.release(batch.slot)
            size = next((r.timings["batch_size"] for r in replies if r.ok), 0)
            if self._metrics is not None and size:
                self._metrics.batch(batch.entry.model, batch.entry.cut, int(size))
            for job, reply in zip(batch.jobs, replies):
                self._finish(job, reply)

    def _drained(self) -> bool:
        """While stopping: True once everything admitted is answered, or at the deadline
        (whatever is left then is answered ``shutting_down``)."""
        if not self._admission.queued and not self._batches:
            return True
        if time.perf_counter() < self._drain_deadline:
            return False
        left: List[Job] = [q.item for q in self._admission.drain()]
        for batch in self._batches.values():
            left.extend(batch.jobs)
        self._batches.clear()
        self._fail(
            left,
            ErrorCode.SHUTTING_DOWN,
            f"daemon stopped before this request was computed "
            f"(drain_timeout_s {self.config.drain_timeout_s:g})",
        )
        return True

    def _describe(self) -> Dict[str, Any]:
        b, a = self.config.batching, self.config.admission
        info = {
            "protocol": PROTOCOL_VERSION,
            "models": self._registry.describe(),
            "device": self.config.device,
            **self._executor.describe(),
            "http": self.http_url,
            "max_message_bytes": self.max_message_bytes,
            "max_batch_size": b.max_batch_size,
            "max_queue_delay_ms": b.max_queue_delay_ms,
            "wait_when_idle": b.wait_when_idle,
            "max_inflight_per_client": a.max_inflight_per_client,
            "rate_per_client": a.rate_per_client,
            "fair_batch_share": a.fair_batch_share,
            "decode_workers": self._pool.workers if self._pool is not None else 0,
            "calibrations": {
                cal.id: {"spec": cal.spec, "hash": cal.hash[:16], **_calibration_scope(cal)}
                for cal in self._calibrations.values()
            },
        }
        if self._precision_check:
            info["precision_check"] = self._precision_check
        return info

    def _stats(self) -> Dict[str, Any]:
        return {
            **self.stats.snapshot(),
            "queued": self._admission.queued,
            "queued_bytes": self._admission.queued_bytes,
            "batches_in_progress": len(self._batches),
            "reply_cache_entries": len(self._replies),
            "reply_cache_bytes": self._replies.bytes,
            "log_lines_suppressed": self._rejections.total_suppressed,
            "gc_frozen_objects": gc.get_freeze_count(),  # > 0 under `edgecloud serve`
            "thread_cpu_s": thread_cpu_seconds(self.thread_ids()),  # which thread limits
            **(self._pool.describe() if self._pool is not None else {}),
            **self._streams.describe(),
        }

    # -- tail threads -------------------------------------------------------------------------

    def _worker(self) -> None:
        while True:
            batch: Optional[Batch] = self._tail_queue.get()
            if batch is None:
                return
            if self._pool is not None:  # the I/O thread may now send the next batch to decode
                self._front.wake()
            try:
                replies = compute(
                    batch, self._executor, self._calibrations, self.stats, self._streams
                )
            except ExecutorUnavailable as exc:  # logged by the executor when it changes
                replies = [
                    Reply.error(job.request.id, ErrorCode.EXECUTOR_UNAVAILABLE, str(exc))
                    for job in batch.jobs
                ]
            except Exception as exc:  # a bug or a device failure: answer, log, keep serving
                log.exception("event=batch_failed size=%d", len(batch.jobs))
                replies = [
                    Reply.error(job.request.id, ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
                    for job in batch.jobs
                ]
            self._results.put((batch.id, replies))
            self._front.wake()


def _calibration_scope(calibration: Any) -> Dict[str, Any]:
    meta = calibration.meta
    return {key: meta[key] for key in ("model", "cut", "weights") if key in meta}
