"""Rate adaptation on the edge: pick a codec from a ladder per frame to meet a latency target.

The ladder lists codec specs from the most bytes (best fidelity) to the fewest, e.g. at
Lite0's ``blocks``: ``q8-ncc-zstd`` (13.6 KB) → ``q4-ncc-zstd`` (4.8 KB) →
``q4-ncc-crans-s2.5-pt`` (1.6 KB). The controller sees each answered frame's latency (head +
encode + round trip) and size, and

- **steps down** when the median latency of the last ``react`` frames sent at the current rung
  exceeds the target, as far as the measured slowdown requires (latency on a saturated link
  scales with the bytes per frame): to the best rung whose expected size is at most
  ``size × target / latency × headroom``;
- **steps up** one rung when ``window`` frames in a row at the current rung would have met
  ``headroom × target`` at the rung above: each frame's time on the link (round trip less the
  daemon's own time) scaled by the bytes of the rung above, plus the rest as measured. A rung
  is held at least ``window`` frames, and a link that only just carries the current rung does
  not tempt the edge back to one it cannot carry.

Answers to frames sent before a switch do not count for the new rung. Goodput is not
estimated separately: on a link that limits, latency is what the queue and the link make of
the bytes, and that is what the target is about.
"""

from __future__ import annotations

import statistics
import threading
from collections import deque
from dataclasses import dataclass
from typing import Deque, Dict, Sequence, Tuple

from edgecloud.errors import ConfigError

#: expected size ratio between neighbouring rungs before one has been seen
UNSEEN_RUNG_RATIO = 0.4


@dataclass
class AdaptConfig:
    """``latency_ms``: per-frame target (head + encode + round trip)."""

    latency_ms: float
    react: int = 3
    window: int = 12
    headroom: float = 0.7

    def validate(self) -> AdaptConfig:
        if self.latency_ms <= 0 or self.react < 1 or self.window < self.react:
            raise ConfigError("adapt: latency_ms > 0 and 1 <= react <= window are needed")
        if not 0 < self.headroom <= 1:
            raise ConfigError("adapt: headroom must be in (0, 1]")
        return self


class RateController:
    """Thread-safe: :meth:`choose` is called when a frame is encoded, :meth:`observe` when its
    answer arrives (another thread)."""

    def __init__(self, rungs: Sequence[str], config: AdaptConfig) -> None:
        if not rungs:
            raise ConfigError("adapt: the codec ladder is empty")
        self.rungs = list(rungs)
        self.config = config.validate()
        self.rung = 0
        self.switches = 0
        self._sizes: Dict[int, float] = {}
        self._latencies: Deque[float] = deque(maxlen=config.window)
        self._above: Deque[float] = deque(maxlen=config.window)  # projected at the rung above
        self._frames = 0
        self._since = 0  # frames numbered below this were sent before the last switch
        self._lock = threading.Lock()

    def choose(self) -> Tuple[int, int]:
        """(rung, frame number) for the next frame."""
        with self._lock:
            self._frames += 1
            return self.rung, self._frames

    def observe(self, rung: int, frame: int, size: int, latency_ms: float, link_ms: float) -> None:
        """An answered frame: its rung, number, bytes, latency and the part of it spent on the
        link (which scales with the bytes; the rest is head, encode and the daemon's work)."""
        with self._lock:
            old = self._sizes.get(rung)
            self._sizes[rung] = size if old is None else 0.8 * old + 0.2 * size
            if frame < self._since or rung != self.rung:
                return
            self._latencies.append(latency_ms)
            c = self.config
            if self.rung > 0:
                link_ms = min(max(link_ms, 0.0), latency_ms)
                scale = self._size(self.rung - 1) / max(size, 1)
                self._above.append(latency_ms + link_ms * (scale - 1.0))
            recent = list(self._latencies)[-c.react :]
            if len(recent) == c.react and statistics.median(recent) > c.latency_ms:
                self._step_down(statistics.median(recent))
            elif len(self._above) == c.window and max(self._above) < c.headroom * c.latency_ms:
                self._switch(self.rung - 1)

    def _step_down(self, latency_ms: float) -> None:
        if self.rung == len(self.rungs) - 1:
            return
        allowed = self._size(self.rung) * self.config.latency_ms / latency_ms
        allowed *= self.config.headroom
        rung = self.rung + 1
        while rung < len(self.rungs) - 1 and self._size(rung) > allowed:
            rung += 1
        self._switch(rung)

    def _size(self, rung: int) -> float:
        """Bytes per frame at ``rung``: measured, or extrapolated from the nearest seen."""
        if rung in self._sizes:
            return self._sizes[rung]
        seen = min(self._sizes, key=lambda r: abs(r - rung))
        return self._sizes[seen] * UNSEEN_RUNG_RATIO ** (rung - seen)

    def _switch(self, rung: int) -> None:
        self.rung = rung
        self.switches += 1
        self._since = self._frames + 1
        self._latencies.clear()
        self._above.clear()
