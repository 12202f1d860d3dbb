"""A real Triton Inference Server on this machine, in its own interpreter (tests, benchmarks,
trying the Triton executor without a GPU server).

PyTriton's Python-backend stub only works under the interpreter it was built for (e.g. a venv
made with Debian's ``/usr/bin/python3.11``; under pyenv's 3.11.7 it fails with
``'_thread.RLock' object has no attribute '_recursion_count'``), so the Triton side runs as a
child process of *that* interpreter, named by ``EDGECLOUD_TRITON_PYTHON``::

    /usr/bin/python3.11 -m venv ~/triton-venv
    ~/triton-venv/bin/pip install nvidia-pytriton onnxruntime
    export EDGECLOUD_TRITON_PYTHON=~/triton-venv/bin/python
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO, List, Optional, Union

from edgecloud.errors import BackendUnavailableError

ENV = "EDGECLOUD_TRITON_PYTHON"
HOST_SCRIPT = Path(__file__).with_name("host.py")


def triton_python() -> Optional[str]:
    """The interpreter named by ``EDGECLOUD_TRITON_PYTHON`` if it can run PyTriton, else None."""
    python = os.environ.get(ENV)
    if not python:
        return None
    check = "import pytriton.triton, onnxruntime, tritonclient.grpc"
    try:
        done = subprocess.run([python, "-c", check], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return python if done.returncode == 0 else None


def _descendants(pid: int) -> List[int]:
    """Every process below ``pid`` (Linux ``/proc``; empty elsewhere)."""
    parents = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = entry.read_text().rsplit(")", 1)[1].split()
            parents[int(entry.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found.extend(children)
        frontier.extend(children)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalTriton:
    """``tritonserver`` (via PyTriton) serving an exported repository on loopback ports.

    >>> with LocalTriton("models/") as triton:
    ...     triton.grpc_url     # "127.0.0.1:PORT", for --triton-url
    """

    def __init__(
        self,
        repository: Union[str, Path],
        *,
        python: Optional[str] = None,
        threads: int = 1,
        grpc_port: int = 0,
        log_path: Optional[Union[str, Path]] = None,
    ) -> None:
        self.python = python or triton_python()
        if self.python is None:
            raise BackendUnavailableError(
                f"no interpreter that runs PyTriton: set {ENV} to the python of a venv with "
                "nvidia-pytriton and onnxruntime (made with a system python, see "
                "edgecloud.cloud.triton.local)"
            )
        self.repository = Path(repository)
        self.threads = threads
        self.grpc_port = grpc_port or free_port()
        self.http_port = free_port()
        self.metrics_port = free_port()
        self.log_path = Path(log_path) if log_path else None
        self._process: Optional[subprocess.Popen] = None
        self._log: Optional[BinaryIO] = None

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def command(self) -> List[str]:
        return [
            self.python,
            str(HOST_SCRIPT),
            "--repository",
            str(self.repository),
            "--grpc-port",
            str(self.grpc_port),
            "--http-port",
            str(self.http_port),
            "--metrics-port",
            str(self.metrics_port),
            "--threads",
            str(self.threads),
        ]

    def start(self, timeout_s: float = 120.0) -> LocalTriton:
        """Start the server and wait until Triton says it is ready."""
        self._log = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        self._process = subprocess.Popen(
            self.command(),
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if self._process.poll() is not None:
                raise BackendUnavailableError(
                    f"the Triton host exited with status {self._process.returncode}"
                    + (f" (log: {self.log_path})" if self.log_path else "")
                )
            if time.monotonic() > deadline:
                self.stop()
                raise BackendUnavailableError(f"Triton was not ready within {timeout_s:g} s")
            time.sleep(0.25)
        return self

    def model_names(self) -> List[str]:
        """The models of the repository (folders with a ``config.pbtxt``)."""
        return sorted(p.name for p in self.repository.iterdir() if (p / "config.pbtxt").is_file())

    def ready(self) -> bool:
        """Triton's own ``/v2/health/ready`` and ``/v2/models/NAME/ready`` of every model."""
        base = f"http://127.0.0.1:{self.http_port}/v2"
        paths = ["/health/ready", *(f"/models/{name}/ready" for name in self.model_names())]
        try:
            for path in paths:
                with urllib.request.urlopen(base + path, timeout=1.0) as response:
                    if response.status != 200:
                        return False
        except (urllib.error.URLError, OSError):
            return False
        return True

    def metrics(self) -> str:
        """Triton's Prometheus metrics text."""
        with urllib.request.urlopen(self.metrics_url, timeout=5.0) as response:
            return response.read().decode()

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the host (it stops tritonserver and its stubs); SIGKILL whatever of them is
        left after ``timeout_s``, so the ports are free when this returns."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            children = _descendants(process.pid)  # tritonserver runs in a session of its own
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            for pid in children:
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LocalTriton:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
