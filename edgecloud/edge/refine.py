"""Resend when unsure: a frame whose answer the cloud is unsure of goes again, finer.

Each frame is sent with the client's (coarse) codec; when the reply's top-1 softmax score
exceeds the second by less than ``below``, the same feature is sent again with ``codec`` (a
finer one) and that answer is the frame's. The daemon needs nothing new: the margin is in the
top-k it replies. Most frames are answered from the coarse stream and the few the model is
unsure of -- those a coarse step is likely to change -- pay a second message and round trip
(measured in ``benchmarks/refine_gain.py``; docs/codec.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from edgecloud.errors import ConfigError


@dataclass(frozen=True)
class RefineConfig:
    """``codec``: the finer codec of the resend; ``below``: resend when the top-1 score less
    the second is below this (softmax probabilities, 0 < below <= 1); ``calibration``: the
    codec's calibration (default: the shipped preset)."""

    codec: str
    below: float = 0.05
    calibration: Any = None

    def __post_init__(self) -> None:
        if not 0.0 < self.below <= 1.0:
            raise ConfigError(f"the resend margin must be in (0, 1], not {self.below:g}")

    def unsure(self, scores: Sequence[float]) -> bool:
        """True if an answer with these top-k ``scores`` (best first) should be resent."""
        return len(scores) >= 2 and scores[0] - scores[1] < self.below
