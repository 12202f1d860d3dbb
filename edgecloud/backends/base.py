"""The ``HeadRunner`` interface: run a model's head on a float32 NCHW batch."""

from __future__ import annotations

import abc
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from edgecloud.errors import HeadInputError


class HeadRunner(abc.ABC):
    """Runs the head of a model up to a cut point. Subclasses set the attributes below.

    A runner built with a learned codec's ``encoder`` (:class:`~edgecloud.codec.LearnedCodec`)
    runs the head and that encoder as one graph: ``run`` returns the latents (N, L, h, w) for
    ``FeatureCodec.encode_latents`` instead of the feature."""

    backend: str = ""
    model: str = ""
    cut: str = ""
    input_shape: Tuple[int, ...] = ()  # without the batch axis
    precision: str = "fp32"
    max_batch: Optional[int] = None
    encoder: Any = None  # the LearnedCodec whose latents run() returns, if any

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Feature (N, C, H, W) float32 of a float32 NCHW ``batch`` of preprocessed images (with
        an ``encoder``: its latents)."""
        return self._run(self.check_input(batch))

    __call__ = run

    @abc.abstractmethod
    def _run(self, batch: np.ndarray) -> np.ndarray: ...

    def describe(self) -> Dict[str, Any]:
        """Flat, JSON-friendly description (backend, model, cut, precision, ...)."""
        return {
            "backend": self.backend,
            "model": self.model,
            "cut": self.cut,
            "precision": self.precision,
            "input_shape": list(self.input_shape),
            "encoder": self.encoder.spec if self.encoder is not None else None,
        }

    def close(self) -> None:  # noqa: B027 - optional hook, most runners hold nothing
        """Release the runtime's resources (no-op by default)."""

    def __enter__(self) -> HeadRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def check_input(self, batch: Any) -> np.ndarray:
        if not isinstance(batch, np.ndarray):
            raise HeadInputError(f"head input must be a numpy array, got {type(batch).__name__}")
        if batch.dtype != np.float32:
            raise HeadInputError(f"head input must be float32, got {batch.dtype}")
        if batch.ndim != 4 or tuple(batch.shape[1:]) != tuple(self.input_shape):
            raise HeadInputError(
                f"head input must be (N, {', '.join(map(str, self.input_shape))}), "
                f"got {tuple(batch.shape)}"
            )
        if batch.shape[0] == 0:
            raise HeadInputError("head input batch is empty")
        if self.max_batch is not None and batch.shape[0] > self.max_batch:
            raise HeadInputError(
                f"batch of {batch.shape[0]} exceeds this runner's maximum batch {self.max_batch}"
            )
        return np.ascontiguousarray(batch)


def shape_tuple(shape: Sequence[int]) -> Tuple[int, ...]:
    return tuple(int(d) for d in shape)
