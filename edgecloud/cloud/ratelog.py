"""Rate-limited log lines: a flood of rejections costs a few lines, not megabytes."""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any


class RateLimitedLog:
    """At most ``burst`` lines per key (e.g. a rejection code) per ``interval_s``; the lines
    over the limit are counted and reported as one ``event=suppressed`` line per key when the
    interval ends (:meth:`flush`, also called by :meth:`log`)."""

    def __init__(self, logger: logging.Logger, burst: int = 10, interval_s: float = 10.0) -> None:
        self.logger = logger
        self.burst = burst
        self.interval_s = interval_s
        self._window_start = time.monotonic()
        self._logged: Counter = Counter()
        self._suppressed: Counter = Counter()
        self.total_suppressed = 0

    def log(self, level: int, key: str, message: str, *args: Any) -> None:
        self.flush()
        if self._logged[key] < self.burst:
            self._logged[key] += 1
            self.logger.log(level, message, *args)
        else:
            self._suppressed[key] += 1
            self.total_suppressed += 1

    def flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._window_start < self.interval_s:
            return
        for key, count in sorted(self._suppressed.items()):
            self.logger.warning(
                "event=suppressed key=%s count=%d interval_s=%.1f",
                key,
                count,
                now - self._window_start,
            )
        self._window_start = now
        self._logged.clear()
        self._suppressed.clear()
