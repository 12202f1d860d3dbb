"""The daemon's compute stage: a decoded batch through the tail, and the replies it earns.

A :class:`Batch` leaves the fair queue as a list of :class:`Job`; its features are decoded
either by a decode worker process (``features`` set when it reaches the tail thread) or, with
``decode_workers = 0``, by the tail thread itself. :func:`compute` runs the tail once on the
contiguous batch and builds one reply per job (failures are answered per item).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Tuple

import numpy as np

from edgecloud.cloud.admission import ClientKey
from edgecloud.cloud.decode import Failure, decode_batch
from edgecloud.cloud.executors import TailExecutor
from edgecloud.cloud.replies import ReplyKey
from edgecloud.cloud.stats import ServerStats
from edgecloud.cloud.streams import StreamStates
from edgecloud.cloud.tails import TailEntry
from edgecloud.transport.protocol import Reply, Request


@dataclass
class Job:
    """An admitted request: its header, its bitstream (a view of the received frame), and
    where its reply goes."""

    request: Request
    payload: Any
    entry: TailEntry
    received: float
    routing_id: bytes
    client: ClientKey
    stream_id: str = ""  # a frame of a stream: decoded against the stream's reference

    @property
    def reply_key(self) -> ReplyKey:
        return (self.client, self.request.id)


@dataclass
class Batch:
    """Jobs of one (model, cut) computed together."""

    id: int
    jobs: List[Job]
    started: float  # when it left the queue
    features: Optional[np.ndarray] = None  # decoded rows of the jobs without a failure
    failures: Optional[List[Optional[Failure]]] = None
    decode_ms: Optional[List[float]] = None
    slot: Optional[int] = None  # the decode pool's shared-memory slot holding ``features``

    @property
    def entry(self) -> TailEntry:
        return self.jobs[0].entry

    @property
    def stream(self) -> bool:
        """Frames of streams (never mixed with others): decoded with the stream states."""
        return bool(self.jobs[0].stream_id)


def compute(
    batch: Batch,
    executor: TailExecutor,
    calibrations: Mapping[str, Any],
    stats: ServerStats,
    streams: StreamStates,
) -> List[Reply]:
    """Decode (unless done already), run the tail on the good rows, build every reply."""
    jobs, entry = batch.jobs, batch.entry
    if batch.features is None and batch.stream:
        items = [(job.client, job.stream_id, job.payload) for job in jobs]
        batch.features, batch.failures, batch.decode_ms = streams.decode_batch(items, entry.shape)
    elif batch.features is None:
        batch.features, batch.failures, batch.decode_ms = decode_batch(
            [job.payload for job in jobs], entry.shape, calibrations
        )
    failures, decode_ms = batch.failures, batch.decode_ms
    replies: List[Optional[Reply]] = [
        None if failure is None else Reply.error(job.request.id, *failure)
        for job, failure in zip(jobs, failures)
    ]
    good = [i for i, failure in enumerate(failures) if failure is None]
    if not good:
        return replies  # type: ignore[return-value]
    t0 = time.perf_counter()
    logits = executor.run(entry, batch.features)
    tail_ms = round((time.perf_counter() - t0) * 1000.0, 3)
    stats.record_batch(len(good))
    top_k = [jobs[i].request.top_k for i in good]
    indices, scores = top_k_softmax(logits, max(top_k))
    indices_rows, scores_rows = indices.tolist(), np.round(scores.astype(np.float64), 6).tolist()
    labels, n_labels = entry.labels, len(entry.labels)
    done = time.perf_counter()
    for row, i in enumerate(good):
        job = jobs[i]
        k = top_k[row]
        idx = indices_rows[row][:k]
        reply = Reply(
            id=job.request.id,
            indices=idx,
            labels=[labels[j] if j < n_labels else str(j) for j in idx],
            scores=scores_rows[row][:k],
            timings={
                "queue_ms": round((batch.started - job.received) * 1000.0, 3),
                "decode_ms": round(decode_ms[i], 3),
                "tail_ms": tail_ms,
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
