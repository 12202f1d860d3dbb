"""Stream coding of consecutive frames of a real clip: residual and video streams, keyframes,
missing references and damaged frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgecloud.codec import CodecCalibration, FeatureCodec, bitstream, decode_bitstream
from edgecloud.codec.stream import MissingReferenceError, StreamDecoder, StreamEncoder
from edgecloud.errors import BitstreamError, CodecSpecError
from edgecloud.partition import split
from edgecloud.presets import find_preset

pytest.importorskip(
    "av", reason="streams of video clips need PyAV (pip install 'edgecloud[video]')"
)

CUT = "blocks"
RESIDUAL = "q4-ncc-crans-s2.5-pt"  # the shipped default, with its preset calibration
VIDEO = "q8-ct-h264-qp32-p99.9-pt"
N_FRAMES = 16


@pytest.fixture(scope="module")
def clip(lite0):
    from edgecloud.clips import bundled_clip, read_clip

    frames = read_clip(bundled_clip("bikes.mp4"), limit=N_FRAMES)
    x = torch.stack([lite0.preprocessing(image) for image in frames])
    head, tail = split(lite0, CUT)
    with torch.inference_mode():
        return {"features": head(x).numpy(), "tail": tail}


@pytest.fixture(scope="module")
def residual_calibration(lite0):
    return find_preset(lite0.name, lite0.weights_id, CUT, RESIDUAL)


@pytest.fixture(scope="module")
def video_calibration(clip):
    return CodecCalibration.fit(clip["features"][::2], VIDEO)


def _headers(streams):
    return [bitstream.unpack(s)[0] for s in streams]


def test_residual_stream_is_exact_on_the_symbols(clip, residual_calibration):
    features = clip["features"]
    encoder = StreamEncoder(RESIDUAL, residual_calibration, "cam-1", keyframe_interval=8)
    decoder = StreamDecoder({residual_calibration.id: residual_calibration})
    per_frame = FeatureCodec.from_spec(RESIDUAL, residual_calibration)
    streams = [encoder.encode(f) for f in features]
    for stream, f in zip(streams, features):
        np.testing.assert_array_equal(decoder.decode(stream), per_frame.decode(per_frame.encode(f)))
    headers = _headers(streams)
    assert [h.frame_index for h in headers] == list(range(N_FRAMES))
    keys = [h.frame_index for h in headers if h.reference_index == bitstream.NO_REFERENCE]
    assert keys == [0, 8]
    assert all(h.reference_index == h.frame_index - 1 for h in headers if h.frame_index not in keys)
    assert {h.stream_id for h in headers} == {"cam-1"}


def test_skipping_small_residuals_keeps_the_error_bounded(clip, residual_calibration):
    features = clip["features"]
    exact = FeatureCodec.from_spec(RESIDUAL, residual_calibration)
    encoder = StreamEncoder(RESIDUAL, residual_calibration, "cam", 100, skip_levels=1)
    decoder = StreamDecoder({residual_calibration.id: residual_calibration})
    step = float(np.max(residual_calibration.hi - residual_calibration.lo)) / 15
    sizes = []
    for f in features:
        stream = encoder.encode(f)
        sizes.append(len(stream))
        reference = exact.decode(exact.encode(f))
        # the receiver's symbols stay within one level of this frame's: no drift
        assert np.abs(decoder.decode(stream) - reference).max() <= step * 1.01
    per_frame = np.mean([len(exact.encode(f)) for f in features])
    assert np.mean(sizes[1:]) < 0.5 * per_frame


def test_a_missing_reference_is_refused_until_a_keyframe(clip, residual_calibration):
    features = clip["features"]
    encoder = StreamEncoder(RESIDUAL, residual_calibration, "cam", 100)
    decoder = StreamDecoder({residual_calibration.id: residual_calibration})
    decoder.decode(encoder.encode(features[0]))
    encoder.encode(features[1])  # lost on the way
    with pytest.raises(MissingReferenceError, match="coded against frame 1"):
        decoder.decode(encoder.encode(features[2]))
    with pytest.raises(MissingReferenceError, match="holds nothing"):
        decoder.decode(encoder.encode(features[3]))  # no guessing afterwards either
    encoder.request_keyframe()
    key = encoder.encode(features[4])
    assert bitstream.unpack(key)[0].reference_index == bitstream.NO_REFERENCE
    decoder.decode(key)
    decoder.decode(encoder.encode(features[5]))
    # a restarted receiver has nothing: the next predicted frame is refused too
    with pytest.raises(MissingReferenceError):
        StreamDecoder({residual_calibration.id: residual_calibration}).decode(
            encoder.encode(features[6])
        )


def test_predicted_frames_do_not_decode_alone_and_damage_is_an_error(clip, residual_calibration):
    features = clip["features"]
    encoder = StreamEncoder(RESIDUAL, residual_calibration, "cam", 100)
    cals = {residual_calibration.id: residual_calibration}
    decoder = StreamDecoder(cals)
    decoder.decode(encoder.encode(features[0]))
    predicted = encoder.encode(features[1])
    with pytest.raises(BitstreamError, match="StreamDecoder"):
        decode_bitstream(predicted, cals)
    header, payload = bitstream.unpack(predicted)
    for bad in (payload[: len(payload) // 2], payload + b"\0", b"\x28\xb5\x2f\xfd" + bytes(16)):
        with pytest.raises(BitstreamError):
            StreamDecoder(cals).decode(bitstream.pack(header, bad))  # no reference at all
    with pytest.raises(BitstreamError):
        decoder.decode(bitstream.pack(header, payload[:-3]))
    with pytest.raises(MissingReferenceError):  # the damaged frame dropped the reference
        decoder.decode(encoder.encode(features[2]))


def test_video_stream_has_p_frames_and_restarts_at_keyframes(clip, video_calibration):
    features = clip["features"]
    encoder = StreamEncoder(VIDEO, video_calibration, "cam", keyframe_interval=8)
    decoder = StreamDecoder({video_calibration.id: video_calibration})
    intra = FeatureCodec.from_spec(VIDEO, video_calibration)
    streams, decoded = [], []
    for f in features:
        streams.append(encoder.encode(f))
        decoded.append(decoder.decode(streams[-1]))
    encoder.close()
    decoded = np.stack(decoded)
    intra_sizes = [len(intra.encode(f)) for f in features]
    assert np.mean([len(s) for s in streams]) < 0.6 * np.mean(intra_sizes)
    with torch.inference_mode():
        top1 = clip["tail"](torch.from_numpy(decoded)).argmax(1)
        reference = clip["tail"](torch.from_numpy(features)).argmax(1)
    assert (top1 == reference).float().mean() >= 0.75
    # a receiver that starts at the second keyframe decodes from there on
    late = StreamDecoder({video_calibration.id: video_calibration})
    with pytest.raises(MissingReferenceError):
        late.decode(streams[7])
    for i in range(8, N_FRAMES):
        np.testing.assert_array_equal(late.decode(streams[i]), decoded[i])


@pytest.mark.parametrize(
    "spec,message",
    [
        ("q8-ncc-zstd", "calibrated clip"),
        ("q8-ct-jpeg90-minmax-pt", "lossless symbol coder"),
        ("q8-ncc-h264-minmax-pt", "ct frames"),
        ("q8-ct-ffv1-minmax-pt", "ct frames"),
        ("f16-zstd", "only q"),
    ],
)
def test_specs_that_cannot_code_streams_say_why(spec, message, clip):
    calibration = None
    if "minmax" in spec:
        calibration = CodecCalibration.fit(clip["features"][:4], spec)
    with pytest.raises(CodecSpecError, match=message):
        StreamEncoder(spec, calibration, "cam")


def test_sweep_of_a_real_clip_writes_frame_and_stream_rows(samples_dir, tmp_path, capsys):
    from edgecloud.cli import main

    csv_path, json_path, plot = tmp_path / "v.csv", tmp_path / "v.json", tmp_path / "v.png"
    argv = ["sweep", "--video", "bikes.mp4", "--limit", "6", "--calib-images", "8",
            "--data", str(samples_dir), "--codec", f"{RESIDUAL},q8-ncc-zstd", "--no-progress",
            "--keyframe-interval", "4", "--csv", str(csv_path), "--json", str(json_path),
            "--plot", str(plot)]  # fmt: skip
    assert main(argv) == 0
    import json

    rows = json.loads(json_path.read_text())["rows"]
    modes = {(r["codec"], r["mode"]) for r in rows}
    assert modes == {(RESIDUAL, "frame"), (RESIDUAL, "stream"), ("q8-ncc-zstd", "frame")}
    by = {(r["codec"], r["mode"]): r for r in rows}
    frame, stream = by[(RESIDUAL, "frame")], by[(RESIDUAL, "stream")]
    assert frame["frames"] == stream["frames"] == 6
    assert stream["fidelity"] == frame["fidelity"]  # exact on the symbols: the same features
    assert by[("q8-ncc-zstd", "frame")]["fidelity"] >= 5 / 6
    assert stream["bits_per_element"] > 0 and stream["top5_agreement"] >= stream["fidelity"]
    for row in rows:  # block bootstrap intervals over the frames
        assert row["fidelity_lo"] <= row["fidelity"] <= row["fidelity_hi"]
        assert row["top5_agreement_lo"] <= row["top5_agreement"] <= row["top5_agreement_hi"]
    assert plot.stat().st_size > 10_000 and csv_path.read_text().count("\n") == 4
    assert "bytes/frame" in capsys.readouterr().out


def test_sweep_of_an_unknown_clip_names_the_bundled_ones(capsys):
    from edgecloud.cli import main

    assert main(["sweep", "--video", "nope.mp4"]) == 1
    assert "bikes.mp4" in capsys.readouterr().err
