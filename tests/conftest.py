"""Shared fixtures: the shared ImageNet samples, the real EfficientNet-Lite0, free ports,
in-process daemons and ``edgecloud serve`` daemons in child processes."""

from __future__ import annotations

import contextlib
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, Iterator, List, Tuple

import pytest
import torch

SAMPLES_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "imagenet-samples"

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    if not (SAMPLES_DIR / "labels.csv").is_file():
        pytest.fail(f"shared ImageNet samples not found at {SAMPLES_DIR.resolve()}")
    return SAMPLES_DIR.resolve()


@pytest.fixture(scope="session")
def lite0():
    from edgecloud.models import load_model

    return load_model("efficientnet_lite0")


@pytest.fixture(scope="session")
def sample_images(lite0, samples_dir) -> Callable[[int], torch.Tensor]:
    """``sample_images(n)``: the first ``n`` shared images, preprocessed for Lite0."""
    from edgecloud.datasets import ImageFolder

    batches: Dict[int, torch.Tensor] = {}

    def images(n: int) -> torch.Tensor:
        if n not in batches:
            dataset = ImageFolder(samples_dir, lite0.preprocessing, limit=n)
            batches[n] = torch.stack([dataset[i][0] for i in range(len(dataset))])
        return batches[n]

    return images


@pytest.fixture(scope="session")
def int8_calibrations(lite0, samples_dir, tmp_path_factory) -> Callable[[str], object]:
    """``int8_calibrations(cut)``: Lite0's INT8 calibration at ``cut`` on the first 64 shared
    images, made once per cut for the whole session."""
    from edgecloud.datasets import ImageFolder
    from edgecloud.quantize import calibrate

    done: Dict[str, object] = {}

    def get(cut: str) -> object:
        if cut not in done:
            out = tmp_path_factory.mktemp(f"int8-{cut}")
            images = ImageFolder(samples_dir, lite0.preprocessing)
            done[cut] = calibrate(lite0, cut, images, num_images=64, out_dir=out)
        return done[cut]

    return get


@pytest.fixture(scope="session")
def local_server() -> Callable[..., ContextManager[Any]]:
    """``with local_server(spec, cut, **config) as server``: a started in-process
    ``CloudServer`` serving ``spec``'s tail at ``cut`` on a free loopback port (``config``:
    more ``ServerConfig`` fields), stopped at the end of the block."""
    from edgecloud.cloud import CloudServer, ServerConfig, TailRegistry

    @contextlib.contextmanager
    def start(spec: Any, cut: str, **config: Any) -> Iterator[Any]:
        registry = TailRegistry("cpu")
        registry.add(spec, cut)
        server = CloudServer(ServerConfig(bind="tcp://127.0.0.1:0", **config), registry=registry)
        server.start()
        try:
            yield server
        finally:
            server.stop()

    return start


@pytest.fixture
def free_endpoint() -> str:
    """``tcp://127.0.0.1:PORT`` with a port that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def start_daemon() -> Iterator[Callable[..., object]]:
    """``start_daemon(*serve_args)``: an ``edgecloud serve`` child process that has printed
    READY (``.endpoint``, ``.pid``, ``.proc``); stopped when the test ends."""
    from edgecloud.cloud.process import DaemonProcess

    started: List[DaemonProcess] = []

    def start(
        *serve_args: str, bind: str = "tcp://127.0.0.1:0", new_session: bool = False
    ) -> DaemonProcess:
        serve = ["--bind", bind, "--stats-interval", "3600", *serve_args]
        daemon = DaemonProcess(serve, new_session=new_session)
        started.append(daemon)
        daemon.start()
        return daemon

    yield start
    for daemon in started:
        daemon.stop(30)


@pytest.fixture(scope="session")
def http_get() -> Callable[[str], Tuple[int, bytes]]:
    """``http_get(url)``: (status, body) of a GET with a real HTTP client, errors included."""

    def get(url: str) -> Tuple[int, bytes]:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    return get


@pytest.fixture(scope="session")
def triton_repository(tmp_path_factory) -> Path:
    """A Triton model repository with Lite0's tail at ``blocks`` (``edgecloud export-triton``),
    with a long batcher delay so that Triton's dynamic batching shows in its metrics."""
    from edgecloud.cli import main

    pytest.importorskip("tritonclient.grpc", reason="needs the triton extra (tritonclient)")
    out = tmp_path_factory.mktemp("triton") / "models"
    argv = ["export-triton", "--cut", "blocks", "--out", str(out), "--max-queue-delay-ms", "20"]
    assert main([*argv, "--preferred-batch-sizes", "4,8", "--max-batch-size", "16"]) == 0
    return out


@pytest.fixture(scope="session")
def triton_python() -> str:
    """The interpreter that runs PyTriton (EDGECLOUD_TRITON_PYTHON; .ci/run makes one)."""
    from edgecloud.cloud.triton.local import ENV, triton_python

    python = triton_python()
    if python is None:
        pytest.skip(
            f"no real Triton server here: {ENV} does not name a python with nvidia-pytriton "
            "and onnxruntime (a venv of a system python; .ci/run makes one)"
        )
    return python


@pytest.fixture(scope="session")
def local_triton(triton_repository, triton_python, tmp_path_factory) -> Iterator[object]:
    """A real ``tritonserver`` (PyTriton) serving ``triton_repository`` on loopback."""
    from edgecloud.cloud.triton.local import LocalTriton

    log = tmp_path_factory.mktemp("triton-log") / "triton.log"
    with LocalTriton(triton_repository, python=triton_python, log_path=log) as triton:
        yield triton
