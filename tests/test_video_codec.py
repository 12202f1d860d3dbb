"""Video inner codecs (PyAV's FFmpeg) on real Lite0 features: round trips, spec grammar, and
damaged payloads."""

from __future__ import annotations

import contextlib
import struct

import numpy as np
import pytest
import torch

from edgecloud.codec import FeatureCodec, bitstream, decode_bitstream
from edgecloud.codec.spec import parse_spec
from edgecloud.codec.video import VIDEO_CODERS, available
from edgecloud.errors import BitstreamError, CodecSpecError
from edgecloud.partition import split

pytest.importorskip("av", reason="video coders need PyAV (pip install 'edgecloud[video]')")

CUT = "blocks"  # 320 x 7 x 7
#: (spec, mean |error| in quantization levels allowed): lossy coders at their default rates
LOSSY = [
    ("q8-ct-hevc", 3.5),
    ("q10-ct-hevc-qp24", 9.0),
    ("q8-ncc-hevc-qp22-fast", 4.0),
    ("q8-ct-h264", 3.5),
    ("q8-ct-av1-crf30-veryfast", 3.0),
    ("q8-ct-vp9", 3.0),
]
LOSSLESS = ["q8-ct-ffv1", "q8-ncc-ffv1", "q12-ct-ffv1", "q4-ccd-ffv1-mse-pc"]


@pytest.fixture(scope="module")
def features(lite0, sample_images):
    x = sample_images(8)
    head, tail = split(lite0, CUT)
    with torch.inference_mode():
        f = head(x)
        return {"features": f.numpy(), "top1": tail(f).argmax(1).numpy(), "tail": tail}


def _symbols_codec(spec: str) -> FeatureCodec:
    """The same quantizer with a lossless byte coder: what the video coder was given."""
    s = parse_spec(spec)
    return FeatureCodec.from_spec(f"q{s.bits}-{s.repack}-none-{s.clip}-{s.scope}")


def test_every_video_coder_is_in_the_wheel():
    assert available() == {name: True for name in VIDEO_CODERS}


@pytest.mark.parametrize("spec,levels", LOSSY)
def test_lossy_video_coders_round_trip_real_features_within_their_error(spec, levels, features):
    codec, reference = FeatureCodec.from_spec(spec), _symbols_codec(spec)
    bits = parse_spec(spec).bits
    decoded, quantized, sizes = [], [], []
    for f in features["features"][:4]:
        stream = codec.encode(f)
        sizes.append(len(stream))
        decoded.append(codec.decode(stream))
        quantized.append(reference.decode(reference.encode(f)))
    decoded, quantized = np.stack(decoded), np.stack(quantized)
    assert decoded.shape == features["features"][:4].shape and decoded.dtype == np.float32
    step = (quantized.max() - quantized.min()) / ((1 << bits) - 1)
    error = np.abs(decoded - quantized).mean() / step
    assert 0 < error <= levels, f"{spec}: mean error {error:.2f} levels"
    with torch.inference_mode():
        top1 = features["tail"](torch.from_numpy(decoded)).argmax(1).numpy()
    assert (top1 == features["top1"][:4]).mean() >= 0.75
    assert max(sizes) < 4 * features["features"][0].size  # compresses float32


@pytest.mark.parametrize("spec", LOSSLESS)
def test_ffv1_is_exact_on_the_quantized_symbols(spec, features):
    from edgecloud.codec import CodecCalibration

    reference_spec = parse_spec(spec).canonical.replace("ffv1", "none")
    codecs = []
    for s in (spec, reference_spec):
        calibration = None
        if parse_spec(s).needs_calibration:
            calibration = CodecCalibration.fit(features["features"], s)
        codecs.append(FeatureCodec.from_spec(s, calibration))
    codec, reference = codecs
    for f in features["features"][:2]:
        exact = reference.decode(reference.encode(f))
        np.testing.assert_array_equal(codec.decode(codec.encode(f)), exact)


def test_a_batch_of_features_is_one_video(features):
    codec = FeatureCodec.from_spec("q8-ct-h264")
    batch = features["features"][:3]
    decoded = codec.decode(codec.encode(batch))
    assert decoded.shape == batch.shape
    singles = np.stack([codec.decode(codec.encode(f)) for f in batch])
    # the images are frames of one video now, coded with about the error of each alone
    assert np.abs(decoded - batch).mean() < 1.5 * np.abs(singles - batch).mean()


def test_video_specs_have_one_canonical_form():
    assert parse_spec("q8-ct-hevc").canonical == "q8-ct-hevc-qp28-medium-msg-pt"
    assert parse_spec("q10-ncc-hevc-qp24-slow").canonical == "q10-ncc-hevc-qp24-slow-msg-pt"
    assert parse_spec("q8-ccd-av1-crf40").canonical == "q8-ccd-av1-crf40-medium-mse-pc"
    assert parse_spec("q8-ct-ffv1").canonical == "q8-ct-ffv1-msg-pt"
    for text in ["q8-ct-hevc", "q8-ct-vp9-crf20-fast-msg-pc", "q12-ct-ffv1"]:
        canonical = parse_spec(text).canonical
        assert parse_spec(canonical).canonical == canonical


@pytest.mark.parametrize(
    "spec,message",
    [
        ("q12-ct-h264", "at most 10 bits"),
        ("q10-ct-vp9", "at most 8 bits"),
        ("q8-ct-hevc-crf30", "qpNN"),
        ("q8-ct-av1-qp30", "crfNN"),
        ("q8-ct-hevc-qp60", "not in 0..51"),
        ("q8-ct-ffv1-qp10", "lossless"),
        ("q8-ct-ffv1-fast", "no speed preset"),
        ("q8-ct-hevc-turbo", "bad option 'turbo'"),
    ],
)
def test_bad_video_specs_name_the_problem(spec, message):
    with pytest.raises(CodecSpecError, match=message):
        parse_spec(spec)


def _repacked(stream: bytes, payload: bytes) -> bytes:
    """The same header with another payload and a valid CRC (a forger's stream)."""
    header, _ = bitstream.unpack(stream)
    return bitstream.pack(header, payload)


@pytest.mark.parametrize(
    "spec", ["q8-ct-hevc", "q8-ct-h264", "q8-ct-av1", "q8-ct-vp9", "q8-ct-ffv1"]
)
def test_damaged_video_payloads_raise_bitstream_errors(spec, features):
    codec = FeatureCodec.from_spec(spec)
    stream = codec.encode(features["features"][0])
    _header, payload = bitstream.unpack(stream)
    (extra,) = struct.unpack_from("<I", payload)
    first = 4 + extra + 4 + 4  # the first packet's bytes
    rng = np.random.default_rng(0)
    garbage = bytearray(payload)
    garbage[first:] = rng.integers(0, 256, len(payload) - first, dtype=np.uint8).tobytes()
    damaged = {
        "truncated": payload[: len(payload) // 2],
        "garbage packets": bytes(garbage),
        "no packets": payload[: 4 + extra] + struct.pack("<I", 0),
        "too many packets": payload[: 4 + extra] + struct.pack("<I", 10_000),
        "trailing bytes": payload + b"\0\0",
    }
    for what, bad in damaged.items():
        with pytest.raises(BitstreamError):
            decode_bitstream(_repacked(stream, bad))
        assert what  # each case raised


def test_a_frame_of_another_size_is_refused(features):
    """Packets of a larger video, relabelled as this feature's: refused, not decoded."""
    small = FeatureCodec.from_spec("q8-ct-hevc").encode(features["features"][0])
    big = FeatureCodec.from_spec("q8-ct-hevc").encode(np.tile(features["features"][0], (1, 4, 4)))
    _header, big_payload = bitstream.unpack(big)
    with pytest.raises(BitstreamError, match="hevc"):
        decode_bitstream(_repacked(small, big_payload))


def test_hardware_encoders_are_chosen_by_name_and_refused_clearly(monkeypatch, features):
    """EDGECLOUD_VIDEO_ENCODERS selects FFmpeg's encoder for a coder (hevc_nvenc on a Jetson);
    one this FFmpeg lacks, or cannot start without its device, is a CodecSpecError."""
    from edgecloud.codec.video import ENCODERS_ENV

    f = features["features"][0]
    monkeypatch.setenv(ENCODERS_ENV, "hevc=no_such_encoder")
    with pytest.raises(CodecSpecError, match="no_such_encoder.*lacks"):
        FeatureCodec.from_spec("q8-ct-hevc").encode(f)
    monkeypatch.setenv(ENCODERS_ENV, "h264=h264_nvenc")
    try:
        stream = FeatureCodec.from_spec("q8-ct-h264").encode(f)
    except CodecSpecError as exc:  # no NVIDIA device here: refused by name, not a crash
        assert "h264_nvenc" in str(exc)
    else:  # a machine with NVENC: the software decoder reads its stream
        assert FeatureCodec.from_spec("q8-ct-h264").decode(stream).shape == f.shape
    monkeypatch.setenv(ENCODERS_ENV, "h264=h264_nvenc")
    with pytest.raises(CodecSpecError, match="8-bit"):
        FeatureCodec.from_spec("q10-ct-h264").encode(f)


def test_damaged_payloads_leave_no_libav_log_lines(features, capfd, caplog):
    """A daemon fed garbage video answers corrupt_bitstream; libav's own line per bad
    macroblock would reach its log unthrottled, so libav logs fatal errors only."""
    stream = FeatureCodec.from_spec("q8-ct-h264-qp44").encode(features["features"][0])
    header, payload = bitstream.unpack(stream)
    rng = np.random.default_rng(2)
    for _ in range(50):
        damaged = bytearray(payload)
        for position in rng.integers(0, len(damaged), 8):
            damaged[position] ^= 0xFF
        with contextlib.suppress(BitstreamError):
            decode_bitstream(bitstream.pack(header, bytes(damaged)))
    assert "decoding MB" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.name.startswith("libav")]
