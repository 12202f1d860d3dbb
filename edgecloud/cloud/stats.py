"""Daemon counters and latency percentiles (over a window of recent requests)."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any, Deque, Dict, Mapping, Optional

import numpy as np

TIMING_KEYS = ("server_ms", "queue_ms", "decode_ms", "tail_ms")


class ServerStats:
    def __init__(self, window: int = 10000) -> None:
        self._lock = threading.Lock()
        self._codes: Counter = Counter()
        self._timings: Dict[str, Deque[float]] = {k: deque(maxlen=window) for k in TIMING_KEYS}
        self._batch_sizes: Deque[int] = deque(maxlen=window)
        self._started = time.time()
        self.cache_hits = 0
        self.unroutable = 0
        self.flood_pauses = 0  # times the I/O thread paused reading a flood

    def count(self, code: str) -> None:
        with self._lock:
            self._codes[code] += 1

    def record(self, timings: Dict[str, float]) -> None:
        with self._lock:
            for key in TIMING_KEYS:
                if key in timings:
                    self._timings[key].append(timings[key])

    def record_batch(self, size: int) -> None:
        with self._lock:
            self._batch_sizes.append(size)

    def snapshot(self) -> Dict[str, Any]:
        """Flat dict: uptime, counts per reply code, p50/p90/p99 of each timing, batch sizes."""
        with self._lock:
            out: Dict[str, Any] = {
                "uptime_s": round(time.time() - self._started, 3),
                "requests": sum(self._codes.values()),
                "cache_hits": self.cache_hits,
                "unroutable": self.unroutable,
                "flood_pauses": self.flood_pauses,
            }
            out.update({f"count_{code}": n for code, n in sorted(self._codes.items())})
            for key, values in self._timings.items():
                if values:
                    arr = np.fromiter(values, dtype=np.float64)
                    name = key[: -len("_ms")]
                    for q in (50, 90, 99):
                        out[f"{name}_p{q}_ms"] = round(float(np.percentile(arr, q)), 3)
            if self._batch_sizes:
                out["batches"] = len(self._batch_sizes)
                out["mean_batch_size"] = round(float(np.mean(self._batch_sizes)), 3)
            return out


def cpu_seconds(stat_path: str) -> Optional[float]:
    """User + system CPU seconds from a /proc ``stat`` file (a process's or a thread's);
    None where it cannot be read (the process or thread has gone, or not Linux)."""
    try:
        fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(native_ids: Mapping[str, int]) -> Dict[str, float]:
    """CPU seconds of this process's threads by role (a thread that cannot be read is left
    out)."""
    out: Dict[str, float] = {}
    for role, tid in native_ids.items():
        seconds = cpu_seconds(f"/proc/self/task/{tid}/stat")
        if seconds is not None:
            out[role] = round(seconds, 2)
    return out
