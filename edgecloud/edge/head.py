"""The head interface the edge runtime needs: any object with ``run(batch) -> feature``.

INT8 runners (ONNX Runtime, TensorRT) come from :mod:`edgecloud.backends`; this module only
provides the torch runner and the protocol they all satisfy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

try:  # Python >= 3.8
    from typing import Protocol
except ImportError:  # pragma: no cover
    Protocol = object  # type: ignore[assignment,misc]


class HeadRunnerLike(Protocol):
    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 images -> (N, C, h, w) float32 feature."""
        ...


class TorchHeadRunner:
    """Run a torch head module (e.g. from :func:`edgecloud.partition.split`) on CPU or CUDA."""

    def __init__(self, module: torch.nn.Module, device: str = "cpu") -> None:
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()

    def run(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            return self.module(x).float().cpu().numpy()


def make_head_runner(spec: Any, cut: str, backend: str = "torch", device: str = "cpu", **kw: Any):
    """A head runner for ``spec`` cut at ``cut``: torch here, other backends via
    :func:`edgecloud.backends.create_head_runner`."""
    if backend == "torch":
        from edgecloud.partition import split

        head, _tail = split(spec, cut)
        return TorchHeadRunner(head, device)
    from edgecloud.backends import create_head_runner

    return create_head_runner(backend, spec=spec, cut=cut, device=device, **kw)
