"""The tail executor interface."""

from __future__ import annotations

import abc
from typing import Any, Dict

import numpy as np

from edgecloud.cloud.tails import TailEntry


class TailExecutor(abc.ABC):
    """Runs tails on batches; one executor serves every (model, cut) of a daemon."""

    name: str = ""

    @abc.abstractmethod
    def run(self, entry: TailEntry, features: np.ndarray) -> np.ndarray:
        """Logits (N, classes) float32 of the tail of ``entry`` on ``features`` (N, *shape)."""

    def describe(self) -> Dict[str, Any]:
        """What ``ping`` reports about the executor."""
        return {"executor": self.name}
