"""Shared fixtures: the shared ImageNet samples, the real EfficientNet-Lite0, free ports and
``edgecloud serve`` daemons in child processes."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Callable, Dict, Iterator, List

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

    def start(*serve_args: str, bind: str = "tcp://127.0.0.1:0") -> DaemonProcess:
        daemon = DaemonProcess(["--bind", bind, "--stats-interval", "3600", *serve_args])
        started.append(daemon)
        daemon.start()
        return daemon

    yield start
    for daemon in started:
        daemon.stop(30)
