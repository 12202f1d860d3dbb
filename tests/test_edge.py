"""The edge runtime: frame sources, head runner, EdgeClient and `edgecloud edge`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgecloud.backends import create_head_runner
from edgecloud.cli import main
from edgecloud.cloud import BatchingConfig
from edgecloud.edge import EdgeClient, iter_frames
from edgecloud.errors import DatasetError, ServerError

CUT = "blocks.4"


@pytest.fixture(scope="module")
def server(lite0, local_server):
    with local_server(lite0, CUT, batching=BatchingConfig(max_batch_size=4)) as server:
        yield server


@pytest.fixture(scope="module")
def frames(samples_dir):
    return list(iter_frames(samples_dir, limit=6))


def _local_top1(spec, frames):
    x = torch.stack([spec.preprocessing(image) for _name, image in frames])
    with torch.inference_mode():
        return spec.module(x).argmax(1).tolist()


def test_iter_frames_folder_file_and_errors(samples_dir, tmp_path: Path):
    frames = list(iter_frames(samples_dir, limit=3))
    assert [n for n, _ in frames] == sorted(p.name for p in (samples_dir / "images").iterdir())[:3]
    assert all(image.mode == "RGB" for _n, image in frames)
    one = sorted((samples_dir / "images").iterdir())[0]
    assert [n for n, _ in iter_frames(one)] == [one.name]
    with pytest.raises(DatasetError, match="does not exist"):
        list(iter_frames(tmp_path / "nope"))
    with pytest.raises(DatasetError, match="no images"):
        list(iter_frames(tmp_path))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="cannot read image"):
        list(iter_frames(bad))


def test_video_without_opencv_names_the_missing_package(tmp_path: Path, monkeypatch):
    from edgecloud.errors import BackendUnavailableError

    monkeypatch.setitem(sys.modules, "cv2", None)  # as on a machine without OpenCV
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(BackendUnavailableError, match="OpenCV"):
        list(iter_frames(tmp_path / "clip.mp4"))
    with pytest.raises(BackendUnavailableError, match="OpenCV"):
        list(iter_frames(0))


def test_video_file_streams_through_the_edge(tmp_path: Path, frames, server, lite0):
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "clip.avi"  # a short video made of real photos
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (320, 320))
    for _name, image in frames[:3]:
        rgb = np.asarray(image.resize((320, 320)))
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    video = list(iter_frames(path))
    assert [n for n, _ in video] == ["clip.avi#000000", "clip.avi#000001", "clip.avi#000002"]
    assert video[0][1].size == (320, 320) and video[0][1].mode == "RGB"
    with EdgeClient(server.endpoint, spec=lite0, cut=CUT, codec="q8-ncc-zstd") as edge:
        results = list(edge.stream(video))
    assert [r.indices[0] for r in results] == _local_top1(lite0, video)


class _WatchedHead:
    """Torch head that notes how many frames were on the wire when each head run started."""

    def __init__(self, spec) -> None:
        self.runner = create_head_runner("torch", spec, CUT)
        self.client = None
        self.in_flight_at_start = []

    def run(self, batch):
        stats = self.client.stats
        self.in_flight_at_start.append(stats.sent - stats.replies)
        return self.runner.run(batch)


def test_stream_is_pipelined_in_order_and_equals_local(server, lite0, frames):
    head = _WatchedHead(lite0)
    with EdgeClient(
        server.endpoint, spec=lite0, cut=CUT, codec="q8-ncc-zstd", head=head, window=3
    ) as edge:
        head.client = edge.client
        results = list(edge.stream(frames))
    assert max(head.in_flight_at_start) >= 1  # a head ran while an earlier frame was out
    assert [r.name for r in results] == [n for n, _ in frames]
    assert [r.indices[0] for r in results] == _local_top1(lite0, frames)
    for r in results:
        assert r.ok and r.bytes_sent > 0 and r.labels[0] == lite0.labels[r.indices[0]]
        stages = {
            "preprocess_ms",
            "head_ms",
            "encode_ms",
            "rtt_ms",
            "decode_ms",
            "queue_ms",
            "tail_ms",
        }
        assert stages <= set(r.timings)


def test_predict_raises_named_server_errors(server, lite0, frames):
    with EdgeClient(
        server.endpoint,
        spec=lite0,
        cut="blocks.5",
        codec="raw",
        head=create_head_runner("torch", lite0, "blocks.5"),
    ) as edge, pytest.raises(ServerError, match="unknown_cut"):
        edge.predict(frames[0][1])
    with EdgeClient(server.endpoint, spec=lite0, cut=CUT, codec="raw", output="tensor") as edge:
        result = edge.predict(np.asarray(frames[0][1]))  # numpy images work too
        assert result.tensor.shape == (1000,) and int(result.tensor.argmax()) == result.indices[0]


def test_edge_cli_writes_jsonl(server, lite0, frames, samples_dir, tmp_path: Path, capsys):
    jsonl = tmp_path / "out.jsonl"
    summary = tmp_path / "summary.json"
    rc = main(
        [
            "edge",
            "--connect",
            server.endpoint,
            "--source",
            str(samples_dir),
            "--limit",
            "3",
            "--cut",
            CUT,
            "--codec",
            "q8-ncc-zstd",
            "--jsonl",
            str(jsonl),
            "--json",
            str(summary),
        ]
    )
    assert rc == 0
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["name"] for r in lines] == [n for n, _ in frames[:3]]
    assert [r["top1_index"] for r in lines] == _local_top1(lite0, frames[:3])
    assert all(r["status"] == "ok" and r["bytes"] > 0 and r["rtt_ms"] > 0 for r in lines)
    data = json.loads(summary.read_text())
    assert data["images"] == 3 and data["ok"] == 3 and data["codec"] == "q8-ncc-zstd"
    assert lines[0]["top1_label"] in capsys.readouterr().out
