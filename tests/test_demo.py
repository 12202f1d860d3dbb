"""`edgecloud demo`, run exactly as the README's first command."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from edgecloud.cli.demo import DEMO_PHOTOS
from edgecloud.cloud.process import cli_command


def _demo(tmp_path: Path, *args: str):
    out = tmp_path / "demo.json"
    proc = subprocess.run(
        cli_command("demo", "--json", str(out), *args),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    rows = data["results"]
    assert [r["image"] for r in rows] == list(DEMO_PHOTOS)
    assert all(0 < r["bytes"] < r["jpeg_bytes"] for r in rows)
    assert rows[0]["prediction"] in proc.stdout and "tail" in proc.stdout
    pid = int(re.search(r"child process (\d+)", proc.stdout).group(1))
    assert not os.path.exists(f"/proc/{pid}") or "zombie" in Path(f"/proc/{pid}/status").read_text()
    return data, rows


def test_demo_defaults_best_codec_with_preset(tmp_path: Path):
    data, rows = _demo(tmp_path)  # zero configuration: the daemon gets no calibration flags
    assert (data["cut"], data["codec"]) == ("blocks", "q4-ncc-crans-s2.5-pt")
    # 1.57 KB/image on ImageNet: far below the JPEG of the crop
    assert all(r["bytes"] < 3000 and r["jpeg_ratio"] > 4 for r in rows)
    # lossy: answers the full model is sure of (>= 0.5) survive, most others too
    assert all(r["same_as_local"] for r in rows if r["local_score"] >= 0.5)
    assert sum(r["same_as_local"] for r in rows) >= 3


@pytest.mark.parametrize("cut,codec", [("blocks.4", "q4-ncc-zstd")])
def test_demo_near_lossless_codec_keeps_every_answer(tmp_path: Path, cut: str, codec: str):
    data, rows = _demo(tmp_path, "--cut", cut, "--codec", codec)
    assert (data["cut"], data["codec"]) == (cut, codec)
    assert all(r["same_as_local"] for r in rows)  # split + codec keep the full model's answer


def test_demo_video_streams_a_clip_against_per_frame_and_h264(tmp_path: Path):
    pytest.importorskip("av", reason="the clip is read with PyAV (pip install 'edgecloud[video]')")
    out = tmp_path / "video.json"
    proc = subprocess.run(
        cli_command("demo", "--video", "--limit", "12", "--json", str(out)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["video"].endswith("bigbuckbunny.mp4") and data["frames"] == 12
    assert len(data["results"]) == 12 and all(r["status"] == "ok" for r in data["results"])
    # the stream sends fewer bytes than the same codec frame by frame (same features)
    assert data["stream_bytes_per_frame"] < data["per_frame_bytes_per_frame"]
    assert data["h264_input_bytes_per_frame"] > 0 and "H.264 of the 224x224 input" in proc.stdout


def test_demo_with_a_codec_calibration_file(tmp_path: Path, lite0, samples_dir):
    """A codec without a shipped preset: refused before any daemon starts, naming the option;
    with --codec-calibration both ends load the file."""
    import torch

    from edgecloud.codec import CodecCalibration
    from edgecloud.experiments.sweep import SweepData
    from edgecloud.partition import split

    codec = "q4-ncc-crans-s4-pt"
    proc = subprocess.run(cli_command("demo", "--codec", codec), capture_output=True, text=True)
    assert proc.returncode == 1 and "--codec-calibration FILE" in proc.stderr
    assert "cloud daemon listening" not in proc.stdout
    images = SweepData.split(str(samples_dir), lite0, None, 16).calibration
    with torch.inference_mode():
        x = torch.stack([images[i][0] for i in range(len(images))])
        features = split(lite0, "blocks")[0](x).numpy()
    cal = CodecCalibration.fit(features, codec, model=lite0.name, weights=lite0.weights_id)
    path = cal.save(tmp_path)
    data, rows = _demo(tmp_path, "--codec", codec, "--codec-calibration", str(path))
    assert data["codec"] == codec and all(r["bytes"] < 3000 for r in rows)
