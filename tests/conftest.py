"""Shared fixtures: the shared ImageNet samples and the real EfficientNet-Lite0."""

from __future__ import annotations

from pathlib import Path

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
