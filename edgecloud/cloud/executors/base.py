"""The tail executor interface."""

from __future__ import annotations

import abc
from typing import Any, Dict, Sequence, Tuple

import numpy as np

from edgecloud.cloud.tails import TailEntry
from edgecloud.errors import EdgecloudError


class ExecutorUnavailable(EdgecloudError):
    """The executor cannot run tails now (e.g. its Triton server is down or lacks a model);
    the daemon answers ``executor_unavailable`` and keeps serving."""


class TailExecutor(abc.ABC):
    """Runs tails on batches; one executor serves every (model, cut) of a daemon."""

    name: str = ""

    @abc.abstractmethod
    def run(self, entry: TailEntry, features: np.ndarray) -> np.ndarray:
        """Logits (N, classes) float32 of the tail of ``entry`` on ``features`` (N, *shape)."""

    def ready(self, entries: Sequence[TailEntry]) -> Tuple[bool, str]:
        """Whether the tails of ``entries`` can run now, and if not, why (``/health/ready``)."""
        return True, ""

    def describe(self) -> Dict[str, Any]:
        """What ``ping`` reports about the executor."""
        return {"executor": self.name}

    def pin(self, buffers: Sequence[np.ndarray]) -> None:
        """Host arrays the features will be read from (the decode pool's shared-memory
        slots), for the lifetime of the executor: an accelerator may page-lock them so
        that copies to it are asynchronous DMA. Default: nothing to do."""
        return None

    def close(self) -> None:
        """Release what :meth:`pin` took."""
        return None
