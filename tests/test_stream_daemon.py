"""A camera stream over real sockets: frames coded against the previous one, the daemon
killed and restarted mid-stream, recovery through a keyframe."""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np
import pytest
import torch

from edgecloud.cloud import CloudServer, ServerConfig, TailRegistry
from edgecloud.cloud.process import DaemonProcess
from edgecloud.codec import FeatureCodec
from edgecloud.codec.stream import StreamEncoder
from edgecloud.edge import EdgeClient
from edgecloud.partition import split
from edgecloud.presets import find_preset
from edgecloud.transport import ErrorCode, FeatureClient, Request

pytest.importorskip("av", reason="the clip is read with PyAV (pip install 'edgecloud[video]')")

CUT = "blocks"
CODEC = "q4-ncc-crans-s2.5-pt"  # residual stream: exact on the symbols
N_FRAMES = 40


@pytest.fixture(scope="module")
def clip(lite0):
    from edgecloud.clips import bundled_clip, read_clip

    frames = read_clip(bundled_clip("bikes.mp4"), limit=N_FRAMES)
    calibration = find_preset(lite0.name, lite0.weights_id, CUT, CODEC)
    codec = FeatureCodec.from_spec(CODEC, calibration)
    head, tail = split(lite0, CUT)
    x = torch.stack([lite0.preprocessing(image) for image in frames])
    with torch.inference_mode():
        features = head(x).numpy()
        exact = np.stack([codec.decode(codec.encode(f)) for f in features])
        top1 = tail(torch.from_numpy(exact)).argmax(1).numpy()
    return {"frames": frames, "features": features, "top1": top1, "calibration": calibration}


def _start(endpoint: str) -> DaemonProcess:
    daemon = DaemonProcess(
        ["--bind", endpoint, "--cut", CUT, "--threads", "1", "--max-batch-size", "4",
         "--max-queue-delay-ms", "2", "--decode-workers", "1"]
    )  # fmt: skip
    daemon.start()
    return daemon


def test_stream_survives_a_daemon_restart_through_a_keyframe(lite0, clip, free_endpoint):
    daemon = _start(free_endpoint)
    restarted = []
    results = []
    try:
        with EdgeClient(
            free_endpoint, cut=CUT, codec=CODEC, spec=lite0, window=4, timeout_s=1.0,
            retries=60, stream_id="cam-0", keyframe_interval=1000,
        ) as edge:  # fmt: skip
            for i, result in enumerate(
                edge.stream((f"frame-{i}", image) for i, image in enumerate(clip["frames"]))
            ):
                results.append(result)
                if i == 15:
                    daemon.kill()  # the stream's reference dies with it

                    def restart() -> None:
                        restarted.append(_start(free_endpoint))

                    threading.Thread(target=restart, daemon=True).start()
        with FeatureClient(free_endpoint, timeout_s=10) as client:
            stats = client.request(Request(kind="stats")).info
    finally:
        for process in [daemon, *restarted]:
            process.stop(60)
    assert restarted, "the daemon was not restarted"
    assert len(results) == N_FRAMES
    assert Counter(r.name for r in results) == {f"frame-{i}": 1 for i in range(N_FRAMES)}
    for i, result in enumerate(results):
        assert result.ok, (i, result.code, result.message)
        # the exact symbols of this frame: never decoded against a missing reference
        assert result.indices[0] == clip["top1"][i], i
    assert stats["keyframes_requested"] >= 1  # the new daemon asked for a keyframe ...
    assert any(r.attempts > 1 for r in results)  # ... and the edge sent it
    assert stats["streams"] == 1


@pytest.fixture(scope="module")
def server(lite0):
    registry = TailRegistry("cpu")
    registry.add(lite0, CUT)
    server = CloudServer(
        ServerConfig(bind="tcp://127.0.0.1:0", decode_workers=0, max_streams=2), registry=registry
    )
    server.start()
    yield server
    server.stop()


def _infer(lite0) -> Request:
    return Request(model=lite0.name, weights_id=lite0.weights_id, cut=CUT, codec=CODEC)


def test_daemon_answers_need_keyframe_and_bounds_its_streams(lite0, clip, server):
    features, calibration = clip["features"], clip["calibration"]
    with FeatureClient(server.endpoint, timeout_s=30) as client:
        encoder = StreamEncoder(CODEC, calibration, "a", keyframe_interval=1000)
        assert client.request(_infer(lite0), encoder.encode(features[0])).ok
        encoder.encode(features[1])  # never sent
        reply = client.request(_infer(lite0), encoder.encode(features[2]))
        assert reply.code == ErrorCode.NEED_KEYFRAME and "send a keyframe" in reply.message
        encoder.request_keyframe()
        reply = client.request(_infer(lite0), encoder.encode(features[3]))
        assert reply.ok and reply.indices[0] == clip["top1"][3]
        # max_streams = 2: a second stream fits, a third is refused by name
        other = StreamEncoder(CODEC, calibration, "b")
        assert client.request(_infer(lite0), other.encode(features[0])).ok
        third = StreamEncoder(CODEC, calibration, "c")
        reply = client.request(_infer(lite0), third.encode(features[0]))
        assert reply.code == ErrorCode.TOO_MANY_STREAMS and "limit 2" in reply.message
