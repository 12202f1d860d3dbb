"""Decode worker processes: batches of bitstreams in, one float32 array per batch out.

The daemon's I/O thread owns a ROUTER bound on ``ipc://``; each worker process connects a
DEALER to it. A batch travels as one multipart message (its bitstreams, copied: pyzmq's
zero-copy send costs twice the CPU of a copy for frames of 1-13 KB); the
worker decodes it straight into a **shared-memory slot** (``multiprocessing.shared_memory``)
and answers with a small message (which rows decoded, failures, times), so the tail reads the
features where the worker wrote them. Workers decode off the daemon's GIL, on every core.

The I/O thread polls each worker's pidfd with the sockets: a worker that dies is
replaced at once and the batch it held is returned to the daemon to be answered with an
error, never lost.

Message formats (ZeroMQ frames)::

    daemon -> worker   [id, b"", batch id, slot, shape JSON, bitstream, bitstream, ...]
    worker -> daemon   [id, b"", batch id, slot, result JSON]  (failures, decode ms per stream)
    worker -> daemon   [id, b"", b"READY", pid]                 once, when started
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import zmq

from edgecloud.errors import ConfigError

log = logging.getLogger("edgecloud.serve")
_READY = b"READY"
STARTUP_TIMEOUT_S = 120.0


@dataclass
class DecodedBatch:
    """A batch a worker has decoded: ``features[:ok]`` are the rows of the streams whose
    failure is None, in order."""

    batch_id: int
    slot: int
    features: np.ndarray
    failures: List[Optional[Tuple[str, str]]]
    decode_ms: List[float]


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen
    identity: bytes
    sentinel: Optional[int]  # a pidfd: readable once the process has exited
    ready: bool = False
    pid: int = 0
    batch: Optional[int] = None  # batch id being decoded
    slot: Optional[int] = None
    started: float = field(default_factory=time.monotonic)

    def alive(self) -> bool:
        return self.process.poll() is None


class DecodePool:
    """``workers`` decode processes and ``slots`` shared-memory slots of ``slot_elements``
    float32 each (a batch: max batch size x the largest feature served).

    Workers are plain ``python -m edgecloud.cloud.decode_pool`` processes (not
    ``multiprocessing`` children: nothing of the daemon's main module is re-imported)."""

    def __init__(
        self,
        context: zmq.Context,
        workers: int,
        slots: int,
        slot_elements: int,
        calibrations: Mapping[str, Any],
    ) -> None:
        self._check_shared_memory(slots * 4 * slot_elements)
        self._dir = tempfile.TemporaryDirectory(prefix="edgecloud-decode-")
        calibration_dir = Path(self._dir.name) / "calibrations"
        calibration_dir.mkdir()
        for calibration in calibrations.values():  # workers load exactly the daemon's
            calibration.save(calibration_dir)
        self.endpoint = f"ipc://{self._dir.name}/decode"
        self.socket = context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.socket.bind(self.endpoint)
        self._memory = [
            shared_memory.SharedMemory(create=True, size=4 * slot_elements) for _ in range(slots)
        ]
        self._free = list(range(slots))
        self._worker_args = [
            self.endpoint,
            str(slot_elements),
            str(calibration_dir),
            *(m.name for m in self._memory),
        ]
        self._workers: Dict[bytes, _Worker] = {}
        self.restarts = 0
        #: without pidfds (Python < 3.9, not Linux) the daemon calls reap() now and then
        self.sentinels_supported = hasattr(os, "pidfd_open")
        for index in range(workers):
            self._spawn(index)

    @staticmethod
    def _check_shared_memory(nbytes: int) -> None:
        """Refuse to start if /dev/shm cannot hold the slots (Docker's default is 64 MB):
        a worker writing past it would die of SIGBUS instead of getting a clear error."""
        try:
            stat = os.statvfs("/dev/shm")
        except OSError:
            return  # not Linux, or no /dev/shm: the OS decides
        free = stat.f_bavail * stat.f_frsize
        if free < nbytes:
            raise ConfigError(
                f"decode workers need {nbytes / 2**20:.0f} MiB of shared memory for their "
                f"batches, /dev/shm has {free / 2**20:.0f} MiB free: give the container more "
                f"(docker run --shm-size), lower max_batch_size, or set decode_workers = 0"
            )

    # -- life cycle ------------------------------------------------------------------------

    def _spawn(self, index: int) -> _Worker:
        identity = b"w%d-%d" % (index, self.restarts)
        process = subprocess.Popen(
            [sys.executable, "-m", __name__, identity.decode(), *self._worker_args],
            stdin=subprocess.DEVNULL,
        )
        sentinel = os.pidfd_open(process.pid) if self.sentinels_supported else None
        worker = _Worker(index, process, identity, sentinel)
        self._workers[identity] = worker
        return worker

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Block until every worker has said READY (they import numba and compile)."""
        deadline = time.monotonic() + timeout
        while not all(w.ready for w in self._workers.values()):
            if time.monotonic() > deadline:
                raise RuntimeError("decode workers did not start in time")
            dead = [w for w in self._workers.values() if not w.alive()]
            if dead:
                code = dead[0].process.returncode
                raise RuntimeError(f"a decode worker exited at start (exit code {code})")
            if self.socket.poll(200):
                self.receive()

    @property
    def workers(self) -> int:
        return len(self._workers)

    def sentinels(self) -> List[int]:
        """File descriptors that become readable when a worker process exits."""
        return [w.sentinel for w in self._workers.values() if w.sentinel is not None]

    def close(self) -> None:
        """Stop the workers (SIGKILL: they ignore SIGTERM, and hold nothing to save), free
        the shared memory."""
        for worker in self._workers.values():
            if worker.alive():
                worker.process.kill()
        for worker in self._workers.values():
            worker.process.wait()
            if worker.sentinel is not None:
                os.close(worker.sentinel)
        self.socket.close(0)
        for memory in self._memory:
            with contextlib.suppress(BufferError):  # a tail abandoned at the drain deadline
                memory.close()
            memory.unlink()
        self._dir.cleanup()

    # -- batches ---------------------------------------------------------------------------

    def idle(self) -> bool:
        """True if a batch can be submitted now (an idle worker and a free slot)."""
        return bool(self._free) and any(w.ready and w.batch is None for w in self._workers.values())

    def submit(self, batch_id: int, shape: Sequence[int], payloads: Sequence[Any]) -> None:
        """Send a batch to an idle worker (check :meth:`idle` first)."""
        worker = next(w for w in self._workers.values() if w.ready and w.batch is None)
        slot = self._free.pop()
        worker.batch, worker.slot = batch_id, slot
        header = [b"%d" % batch_id, b"%d" % slot, json.dumps(list(shape)).encode()]
        try:
            self.socket.send_multipart([worker.identity, b"", *header, *payloads])
        except zmq.ZMQError as exc:  # the worker just died: reap() returns this batch
            log.warning("event=decode_submit_failed worker=%d error=%s", worker.index, exc)

    def receive(self) -> List[DecodedBatch]:
        """Handle every message waiting from the workers; returns the decoded batches."""
        out: List[DecodedBatch] = []
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return out
            decoded = self._handle(frames)
            if decoded is not None:
                out.append(decoded)

    def _handle(self, frames: List[bytes]) -> Optional[DecodedBatch]:
        worker = self._workers.get(frames[0])
        if worker is None:  # a message from a worker that was replaced meanwhile
            return None
        if frames[2] == _READY:
            worker.ready = True
            worker.pid = int(frames[3])
            return None
        batch_id, slot = int(frames[2]), int(frames[3])
        result = json.loads(frames[4])
        worker.batch = worker.slot = None
        failures = [tuple(f) if f else None for f in result["failures"]]
        ok = sum(f is None for f in failures)
        shape = tuple(result["shape"])
        view = np.ndarray((ok, *shape), dtype=np.float32, buffer=self._memory[slot].buf)
        return DecodedBatch(batch_id, slot, view, failures, result["decode_ms"])

    def buffers(self) -> List[np.ndarray]:
        """The shared-memory slots as flat float32 arrays (for an executor to pin)."""
        return [np.ndarray(m.size // 4, np.float32, buffer=m.buf) for m in self._memory]

    def release(self, slot: int) -> None:
        """The tail is done with a slot: it may be written again."""
        self._free.append(slot)

    def reap(self) -> List[int]:
        """Replace workers that died; returns the ids of the batches they held."""
        lost: List[int] = []
        for identity, worker in list(self._workers.items()):
            if worker.alive():
                continue
            log.error(
                "event=decode_worker_died worker=%d pid=%d exit_code=%s batch=%s",
                worker.index,
                worker.process.pid,
                worker.process.returncode,
                worker.batch,
            )
            del self._workers[identity]
            if worker.sentinel is not None:
                os.close(worker.sentinel)
            if worker.batch is not None:
                lost.append(worker.batch)
            if worker.slot is not None:
                self._free.append(worker.slot)
            self.restarts += 1
            self._spawn(worker.index)
        return lost

    def describe(self) -> Dict[str, Any]:
        return {
            "decode_workers": len(self._workers),
            "decode_worker_pids": [w.pid for w in self._workers.values() if w.ready],
            "decode_worker_restarts": self.restarts,
        }


# -- the worker process -------------------------------------------------------------------------


def worker_main(
    identity: bytes,
    endpoint: str,
    slot_elements: int,
    calibration_dir: str,
    memory_names: Sequence[str],
) -> None:
    """Decode batches from the daemon until it goes away or kills this process.

    SIGINT and SIGTERM are ignored: they reach the whole process group (Ctrl-C in a
    terminal, systemd's default kill mode, ``tini -g``) while the daemon drains, and the
    daemon needs its decoders until it has answered everything; it kills them afterwards."""
    from edgecloud.cloud.decode import decode_batch, warm_up_codecs
    from edgecloud.codec.calibration import load_calibrations

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    memories = [_attach(name) for name in memory_names]
    calibrations = load_calibrations(calibration_dir)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.ROUTING_ID, identity)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    warm_up_codecs(calibrations)
    sock.send_multipart([b"", _READY, b"%d" % os.getpid()])
    parent = os.getppid()
    while True:
        if not sock.poll(1000):
            if os.getppid() != parent:  # the daemon is gone
                return
            continue
        frames = sock.recv_multipart(copy=False)
        batch_id, slot = frames[1].bytes, int(frames[2].bytes)
        shape = tuple(json.loads(frames[3].bytes))
        payloads = [f.buffer for f in frames[4:]]
        rows = np.ndarray(
            (slot_elements // int(np.prod(shape)), *shape), np.float32, buffer=memories[slot].buf
        )
        _features, failures, times = decode_batch(payloads, shape, calibrations, out=rows)
        result = {
            "shape": list(shape),
            "failures": [list(f) if f else None for f in failures],
            "decode_ms": [round(t, 4) for t in times],
        }
        sock.send_multipart([b"", batch_id, b"%d" % slot, json.dumps(result).encode()])


def _attach(name: str) -> shared_memory.SharedMemory:
    """Open a slot of the daemon's; the daemon owns it, so this process's resource tracker
    must not unlink it when this process exits."""
    memory = shared_memory.SharedMemory(name=name)
    from multiprocessing import resource_tracker

    resource_tracker.unregister(memory._name, "shared_memory")  # type: ignore[attr-defined]
    return memory


if __name__ == "__main__":  # python -m edgecloud.cloud.decode_pool IDENTITY ENDPOINT ...
    worker_main(sys.argv[1].encode(), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5:])
