"""Resending the frames the cloud is unsure of with a finer codec (edgecloud.edge.refine)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgecloud.cli import main
from edgecloud.cloud import BatchingConfig
from edgecloud.codec import CodecCalibration
from edgecloud.edge import EdgeClient, RefineConfig, iter_frames
from edgecloud.edge.client import preset_for
from edgecloud.errors import CalibrationError, ConfigError
from edgecloud.experiments.sweep import SweepData
from edgecloud.partition import split

CUT = "blocks"
COARSE = "q4-ncc-crans-s4-pt"
FINE = "q4-ncc-crans-s2.5-pt"  # the preset shipped for blocks
SHIPPED_COARSE = "q4-ncc-crans-s3.5-pt"  # the preset shipped for resending at blocks


@pytest.fixture(scope="module")
def coarse_file(lite0, samples_dir, tmp_path_factory) -> Path:
    """The coarse codec's calibration, fitted on the last 32 shared images."""
    images = SweepData.split(str(samples_dir), lite0, None, 32).calibration
    x = torch.stack([images[i][0] for i in range(len(images))])
    head, _ = split(lite0, CUT)
    with torch.inference_mode():
        features = head(x).numpy()
    cal = CodecCalibration.fit(
        features, COARSE, model=lite0.name, weights=lite0.weights_id, cut=CUT
    )
    return cal.save(tmp_path_factory.mktemp("coarse"))


@pytest.fixture(scope="module")
def server(lite0, coarse_file, local_server):
    batching = BatchingConfig(max_batch_size=4)
    with local_server(lite0, CUT, batching=batching, codec_calibrations=[str(coarse_file)]) as s:
        yield s


@pytest.fixture(scope="module")
def frames(samples_dir):
    return list(iter_frames(samples_dir, limit=6))


def _client(server, lite0, coarse_file, **kw) -> EdgeClient:
    calibration = CodecCalibration.load(coarse_file)
    return EdgeClient(
        server.endpoint, spec=lite0, cut=CUT, codec=COARSE, calibration=calibration, **kw
    )


def _answers(server, lite0, codec, calibration, frames):
    with EdgeClient(
        server.endpoint, spec=lite0, cut=CUT, codec=codec, calibration=calibration
    ) as e:
        return list(e.stream(frames))


def test_unsure_frames_are_resent_finer_and_answered_from_the_resend(
    server, lite0, coarse_file, frames
):
    coarse = _answers(server, lite0, COARSE, CodecCalibration.load(coarse_file), frames)
    fine = _answers(server, lite0, FINE, preset_for(lite0, CUT, FINE), frames)
    # every frame is "unsure" below a margin of 1: each is resent and answered finely
    with _client(server, lite0, coarse_file, refine=RefineConfig(FINE, below=1.0)) as edge:
        always = list(edge.stream(frames))
    assert all(r.ok and r.refined and r.codec == FINE for r in always)
    assert [r.indices for r in always] == [r.indices for r in fine]
    assert [r.bytes_sent for r in always] == [
        c.bytes_sent + f.bytes_sent for c, f in zip(coarse, fine)
    ]
    # the frame's round trip counts both messages': the resend's alone is less
    assert all(r.timings["rtt_ms"] > r.timings["refine_rtt_ms"] > 0 for r in always)
    assert [r.to_dict()["refined"] for r in always] == [True] * len(frames)
    # no frame is below a margin of 1e-9: each is answered from the coarse stream
    with _client(server, lite0, coarse_file, refine=RefineConfig(FINE, below=1e-9)) as edge:
        never = list(edge.stream(frames))
    assert not any(r.refined for r in never) and all(r.codec == COARSE for r in never)
    assert [(r.indices, r.bytes_sent) for r in never] == [(c.indices, c.bytes_sent) for c in coarse]
    # a margin in between resends exactly the frames whose coarse margin is below it
    margins = [c.scores[0] - c.scores[1] for c in coarse]
    below = float(np.median(margins))
    with _client(server, lite0, coarse_file, refine=RefineConfig(FINE, below=below)) as edge:
        some = list(edge.stream(frames))
    assert [r.refined for r in some] == [m < below for m in margins]


def test_refine_refuses_what_it_cannot_do(server, lite0, coarse_file):
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        RefineConfig(FINE, below=0.0)
    with pytest.raises(ConfigError, match="top_k >= 2"):
        _client(server, lite0, coarse_file, refine=RefineConfig(FINE), top_k=1)
    with pytest.raises(CalibrationError, match="--refine q4-ncc-crans-s9-pt.*--refine-calibration"):
        _client(server, lite0, coarse_file, refine=RefineConfig("q4-ncc-crans-s9-pt"))
    with pytest.raises(ConfigError, match="streams"):
        _client(server, lite0, coarse_file, refine=RefineConfig(FINE), stream_id="cam")


def test_edge_cli_refine(server, coarse_file, samples_dir, tmp_path: Path, capsys):
    jsonl = tmp_path / "out.jsonl"
    argv = ["edge", "--connect", server.endpoint, "--data", str(samples_dir), "--limit", "3",
            "--cut", CUT, "--codec", COARSE, "--codec-calibration", str(coarse_file),
            "--refine", FINE, "--refine-below", "1", "--jsonl", str(jsonl)]  # fmt: skip
    assert main(argv) == 0
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(lines) == 3 and all(r["refined"] and r["codec"] == FINE for r in lines)
    assert "(resent finer)" in capsys.readouterr().out
    assert main(argv[:-6] + ["--refine-calibration", str(coarse_file)]) == 1
    assert "--refine-calibration applies with --refine" in capsys.readouterr().err


def test_edge_cli_refine_with_the_shipped_pair(server, samples_dir, tmp_path: Path, capsys):
    """``--refine`` alone: the record's coarse codec first (a shipped preset), the recommended
    codec for unsure frames; a cut without a shipped coarse codec says so."""
    jsonl = tmp_path / "out.jsonl"
    argv = ["edge", "--connect", server.endpoint, "--data", str(samples_dir), "--limit", "3",
            "--cut", CUT, "--refine", "--refine-below", "1", "--jsonl", str(jsonl)]  # fmt: skip
    assert main(argv) == 0
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(lines) == 3 and all(r["refined"] and r["codec"] == FINE for r in lines)
    err = capsys.readouterr().err
    assert f"codec {SHIPPED_COARSE}, unsure answers resent as {FINE} (margin 1)" in err
    assert main(argv[:8] + ["blocks.3", "--refine"]) == 1
    assert "no coarse codec ships for resending" in capsys.readouterr().err


def test_refine_with_video_coders(server, lite0, frames):
    """The lowest-rate pair measured (docs/codec.md): AV1 intra at two crf values, with no
    calibration on either end."""
    pytest.importorskip("av", reason="AV1 needs PyAV (pip install 'edgecloud[video]')")
    coarse, fine = "q8-ct-av1-crf59", "q8-ct-av1-crf50"
    coarse_alone = _answers(server, lite0, coarse, None, frames)
    fine_alone = _answers(server, lite0, fine, None, frames)
    refine = RefineConfig(fine, below=1.0)
    with EdgeClient(server.endpoint, spec=lite0, cut=CUT, codec=coarse, refine=refine) as edge:
        always = list(edge.stream(frames))
    assert all(r.ok and r.refined and r.codec == fine for r in always)
    assert [r.indices for r in always] == [r.indices for r in fine_alone]
    assert [r.bytes_sent for r in always] == [
        c.bytes_sent + f.bytes_sent for c, f in zip(coarse_alone, fine_alone)
    ]
    assert sum(c.bytes_sent for c in coarse_alone) < sum(f.bytes_sent for f in fine_alone)
