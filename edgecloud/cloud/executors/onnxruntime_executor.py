"""Tails in ONNX Runtime on the daemon's device: each tail exported to ONNX once, at start.

On a CPU it is the faster executor (measured on 2 cores at Lite0 ``blocks``: the tail thread
spends ~18 % less CPU per image than torch's, see ``benchmarks/bench_daemon.py --executor``),
and one ``run`` call computes a whole batch outside the GIL. fp32 only.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

from edgecloud.cloud.executors.base import TailExecutor
from edgecloud.cloud.tails import TailEntry


class OnnxRuntimeExecutor(TailExecutor):
    """``threads``: ONNX Runtime's compute threads per tail (None: its default)."""

    name = "onnxruntime"

    def __init__(self, device: torch.device, threads: Optional[int] = None) -> None:
        import onnxruntime as ort

        from edgecloud.onnxrt import providers

        providers(ort, str(device))  # refuses a device it cannot run on, before any export
        self.device = device
        self.threads = threads
        self._version = ort.__version__
        self._sessions: Dict[int, Any] = {}
        self._lock = threading.Lock()
        self._dir = tempfile.TemporaryDirectory(prefix="edgecloud-tails-")

    def _session(self, entry: TailEntry) -> Any:
        """The session of ``entry``'s tail, exported and checked against torch the first
        time (the daemon's warm-up does that for every tail before it serves)."""
        session = self._sessions.get(id(entry))
        if session is None:
            with self._lock:
                session = self._sessions.get(id(entry))
                if session is None:
                    session = self._sessions[id(entry)] = self._load(entry)
        return session

    def _load(self, entry: TailEntry) -> Any:
        from edgecloud.onnxrt import make_session
        from edgecloud.quantize.export import EXPORT_OPSET, export_onnx

        path = Path(self._dir.name) / f"{entry.model}-{entry.cut}-{entry.weights_id[:8]}.onnx"
        export_onnx(entry.tail, entry.shape, path, opset=EXPORT_OPSET, what="tail")
        return make_session(path, str(self.device), self.threads)

    def run(self, entry: TailEntry, features: np.ndarray) -> np.ndarray:
        session = self._session(entry)
        return session.run(None, {session.get_inputs()[0].name: features})[0]

    def describe(self) -> Dict[str, Any]:
        return {
            "executor": self.name,
            "device": str(self.device),
            "precision": "fp32",
            "threads": self.threads,
            "onnxruntime": self._version,
        }

    def close(self) -> None:
        self._sessions.clear()
        self._dir.cleanup()
