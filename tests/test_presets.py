"""Codec calibration presets: shipped files, lookup, and edge -> daemon with no flags."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgecloud.cloud import CloudServer, ServerConfig, TailRegistry
from edgecloud.codec import CodecCalibration, peek_header
from edgecloud.edge import EdgeClient, iter_frames
from edgecloud.errors import CalibrationError, ServerError
from edgecloud.presets import PRESET_DIR, expected_presets, find_preset, preset_calibrations

CUT, CODEC = "blocks", "q4-ncc-crans-s2.5-pt"


def test_presets_load_match_their_hash_and_are_found(lite0):
    cals = preset_calibrations()
    assert len(cals) == len(expected_presets()) == len(list(PRESET_DIR.glob("*.npz")))
    for path in PRESET_DIR.glob("*.npz"):
        header = json.loads(str(np.load(path)["header"]))
        cal = CodecCalibration.load(path)  # recomputes the hash over spec and arrays
        assert cal.hash == header["hash"] and path.stem == cal.id == cal.hash[:8]
        assert cal.meta["calibration_images"] == 64
    for model, cut, spec in expected_presets():
        cal = find_preset(model, lite0.weights_id, cut, spec)
        assert cal is not None and cals[cal.id] is cal
        assert (cal.meta["model"], cal.meta["cut"]) == (model, cut)
    assert find_preset(lite0.name, "0" * 16, CUT, CODEC) is None  # other weights
    assert find_preset(lite0.name, lite0.weights_id, "blocks.5", CODEC) is None
    assert find_preset(lite0.name, lite0.weights_id, CUT, "q4-ncc-crans-s3-pt") is None


def test_edge_without_preset_or_calibration_says_so(lite0):
    with pytest.raises(CalibrationError, match="no preset ships.*blocks.5.*--codec q8-ncc-zstd"):
        EdgeClient("tcp://127.0.0.1:9", spec=lite0, cut="blocks.5", codec=CODEC)


@pytest.fixture(scope="module")
def registry(lite0):
    registry = TailRegistry("cpu")
    registry.add(lite0, CUT)
    return registry


def _serve(registry, **config) -> CloudServer:
    return CloudServer(ServerConfig(bind="tcp://127.0.0.1:0", **config), registry=registry)


def _edge(server, spec) -> EdgeClient:
    return EdgeClient(server.endpoint, spec=spec, cut=CUT, codec=CODEC, timeout_s=30)


def test_preset_stream_decoded_by_daemon_without_calibration_flags(lite0, registry, samples_dir):
    frames = list(iter_frames(samples_dir, limit=4))  # evaluation images, not calibration ones
    x = torch.stack([lite0.preprocessing(image) for _name, image in frames])
    with torch.inference_mode():
        local = lite0.module(x).argmax(1).tolist()
    preset = find_preset(lite0.name, lite0.weights_id, CUT, CODEC)
    with _serve(registry) as server, _edge(server, lite0) as edge:  # no calibration flags
        _request, data, _ = edge.prepare(frames[0][1])
        header = peek_header(data)
        assert (header.calibration_id, header.spec) == (preset.id, preset.spec)
        assert preset.hash.startswith(header.calibration_hash)
        results = [edge.predict(image) for _name, image in frames]
    assert all(0 < r.bytes_sent < 3000 for r in results)  # ~1.6 KB/image
    agree = sum(r.indices[0] == top1 for r, top1 in zip(results, local))
    assert agree >= 3, (agree, [r.indices[0] for r in results], local)  # lossy, 95 % fidelity
    assert all(top1 in r.indices for r, top1 in zip(results, local))  # top-5 keeps it

    with _serve(registry, codec_presets=False) as server, _edge(server, lite0) as edge:
        # presets off: the daemon cannot decode and says which calibration is missing
        pytest.raises(ServerError, edge.predict, frames[0][1]).match(preset.id)
