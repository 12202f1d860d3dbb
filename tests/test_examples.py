"""The scripts in examples/ run as a user runs them (real model, real images, loopback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("script", ["quickstart.py", "python_api.py"])
def test_example_runs(script, samples_dir):
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), str(samples_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "goldfish" in done.stdout  # 0001_n01443537.jpg, predicted through the daemon
