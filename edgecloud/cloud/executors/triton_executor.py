"""Tails on a Triton Inference Server, over its KServe-v2 gRPC API (``tritonclient``).

The daemon keeps its ZeroMQ front, admission, decoding and replies; each decoded batch is one
Triton request to the model ``edgecloud export-triton`` wrote for its (model, cut, weights).
Triton's dynamic batcher merges the batches of every daemon (and tail thread) that share the
server. A failing Triton (down, restarting, model missing) raises
:class:`ExecutorUnavailable`: the daemon answers ``executor_unavailable``, reports not ready,
and recovers by itself when Triton is back (the gRPC channel reconnects).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Dict, Sequence, Tuple

import numpy as np

from edgecloud.cloud.executors.base import ExecutorUnavailable, TailExecutor
from edgecloud.cloud.tails import TailEntry
from edgecloud.cloud.triton.repository import INPUT_NAME, OUTPUT_NAME, triton_model_name
from edgecloud.errors import ConfigError

log = logging.getLogger(__name__)
#: readiness probes must answer quickly, also when Triton does not
READY_TIMEOUT_S = 2.0


class TritonExecutor(TailExecutor):
    """Run tails on the Triton server at ``url`` (``HOST:PORT`` of its gRPC endpoint)."""

    name = "triton"

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        try:
            import tritonclient.grpc as grpcclient
        except ImportError:
            raise ConfigError(
                "--executor triton needs tritonclient: pip install 'edgecloud[triton]'"
            ) from None
        if ":" not in url or "/" in url:
            raise ConfigError(f"--triton-url must be HOST:PORT (Triton's gRPC port), not {url!r}")
        self.url = url
        self.timeout_s = timeout_s
        self._grpc = grpcclient
        self._local = threading.local()  # one client (channel) per thread
        self._available = True
        self._state_lock = threading.Lock()
        self._probe: Any = None  # the readiness checks' channel (HTTP handlers are new threads)
        self._probe_lock = threading.Lock()

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._grpc.InferenceServerClient(self.url)
        return client

    def run(self, entry: TailEntry, features: np.ndarray) -> np.ndarray:
        model = triton_model_name(entry.model, entry.cut, entry.weights_id)
        tensor = self._grpc.InferInput(INPUT_NAME, list(features.shape), "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        try:
            result = self._client().infer(
                model,
                [tensor],
                outputs=[self._grpc.InferRequestedOutput(OUTPUT_NAME)],
                client_timeout=self.timeout_s,
            )
        except self._grpc.InferenceServerException as exc:
            self._set_available(False, f"{exc.status()}: {exc.message()}")
            raise ExecutorUnavailable(
                f"Triton at {self.url} did not run {model}: {exc.message()}"
            ) from None
        self._set_available(True, "")
        return result.as_numpy(OUTPUT_NAME)

    def _set_available(self, available: bool, reason: str) -> None:
        """Log changes of Triton's availability once, not once per batch."""
        with self._state_lock:
            if available == self._available:
                return
            self._available = available
        if available:
            log.info("event=executor_available url=%s", self.url)
        else:
            log.warning("event=executor_unavailable url=%s reason=%s", self.url, reason)

    def ready(self, entries: Sequence[TailEntry]) -> Tuple[bool, str]:
        with self._probe_lock:
            if self._probe is None:
                self._probe = self._grpc.InferenceServerClient(self.url)
            return self._check_ready(self._probe, entries)

    def _check_ready(self, client: Any, entries: Sequence[TailEntry]) -> Tuple[bool, str]:
        try:
            if not client.is_server_ready(client_timeout=READY_TIMEOUT_S):
                return False, f"Triton at {self.url} is not ready"
            for entry in entries:
                model = triton_model_name(entry.model, entry.cut, entry.weights_id)
                if not client.is_model_ready(model, client_timeout=READY_TIMEOUT_S):
                    return False, (
                        f"Triton at {self.url} has no ready model {model} (the tail of "
                        f"{entry.model} at {entry.cut}, weights {entry.weights_id}): export it "
                        "with `edgecloud export-triton`"
                    )
        except self._grpc.InferenceServerException as exc:
            return False, f"Triton at {self.url} does not answer: {exc.message()}"
        return True, ""

    def describe(self) -> Dict[str, Any]:
        return {"executor": self.name, "triton_url": self.url}
