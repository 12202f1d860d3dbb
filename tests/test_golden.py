"""Golden files: the bytes of bitstream format 2 and wire protocol 1 for fixed inputs.

A change of these bytes is a format change and must be a decision: regenerate the files on
purpose with ``EDGECLOUD_REGENERATE_GOLDEN=1 pytest tests/test_golden.py`` and say why in the
commit. Streams of edgecloud's own coders (raw, bit packing, rANS, crans) must encode to the
same bytes; streams of third-party coders (zstd, PNG) whose bytes may change with the library
version must still decode to the same tensor.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from edgecloud.codec import CodecCalibration, FeatureCodec, bitstream, decode_bitstream
from edgecloud.errors import BitstreamError
from edgecloud.presets import preset_calibrations
from edgecloud.transport import Reply, Request, pack_reply, pack_request

GOLDEN = Path(__file__).resolve().parent / "golden"
REGENERATE = os.environ.get("EDGECLOUD_REGENERATE_GOLDEN") == "1"
SHAPE = (320, 7, 7)  # Lite0 "blocks": the shipped crans preset applies
OWN = ["raw", "q4-ncc-none", "q4-ncc-crans-s2.5-pt", "q3-ncc-rans"]
THIRD_PARTY = ["q8-ncc-zstd", "q8-ct-png"]


def _feature() -> np.ndarray:
    """A fixed ReLU6-like feature (the golden input)."""
    rng = np.random.default_rng(2026)
    x = np.clip(rng.gamma(0.7, 0.8, SHAPE), 0.0, 6.0).astype(np.float32)
    x[rng.random(SHAPE) < 0.45] = 0.0
    return x


def _codec(spec: str) -> FeatureCodec:
    if spec == "q4-ncc-crans-s2.5-pt":
        cal = next(c for c in preset_calibrations().values() if c.spec == "q4-ncc-crans-s2.5-pt")
        return FeatureCodec.from_spec(spec, cal)
    if spec == "q3-ncc-rans":
        rng = np.random.default_rng(7)
        fitted = np.clip(rng.gamma(0.7, 0.8, (16, *SHAPE)), 0, 6).astype(np.float32)
        return FeatureCodec.from_spec(spec, CodecCalibration.fit(fitted, spec, name="golden"))
    return FeatureCodec.from_spec(spec)


def _check(name: str, data: bytes, exact: bool) -> bytes:
    path = GOLDEN / name
    if REGENERATE:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
    golden = path.read_bytes()
    if exact:
        assert data == golden, f"{name}: the format changed (regenerate on purpose, see doc)"
    return golden


@pytest.mark.parametrize("spec", OWN + THIRD_PARTY)
def test_bitstream_bytes_and_decoding_are_pinned(spec):
    codec = _codec(spec)
    golden = _check(f"bitstream-v2-{spec}.bin", codec.encode(_feature()), exact=spec in OWN)
    cals = {codec.calibration.id: codec.calibration} if codec.calibration else None
    decoded = decode_bitstream(golden, cals)
    digest = hashlib.sha256(np.ascontiguousarray(decoded, "<f4").tobytes()).hexdigest()
    _check(f"bitstream-v2-{spec}.decoded.sha256", digest.encode(), exact=True)


def test_stream_frame_header_is_pinned():
    header = bitstream.BitstreamHeader(
        version=2,
        spec="raw",
        dtype="float32",
        shape=(2, 3),
        stream_id="camera-1",
        frame_index=7,
        reference_index=6,
    )
    data = bitstream.pack(header, np.arange(6, dtype="<f4").tobytes())
    golden = _check("bitstream-v2-stream-frame.bin", data, exact=True)
    parsed, payload = bitstream.unpack(golden)
    assert (parsed.stream_id, parsed.frame_index, parsed.reference_index) == ("camera-1", 7, 6)


def test_format_1_streams_decode_or_are_refused_clearly():
    """A format-1 stream is format 2 without the stream section."""
    v2 = FeatureCodec.from_spec("q8-ncc-zstd").encode(_feature())
    header, payload = bitstream.unpack(v2)
    v1 = _as_format_1(header, payload)
    np.testing.assert_array_equal(decode_bitstream(v1), decode_bitstream(v2))
    crans = _codec("q4-ncc-crans-s2.5-pt")
    header, payload = bitstream.unpack(crans.encode(_feature()))
    with pytest.raises(BitstreamError, match="format-1 crans stream used compressai"):
        decode_bitstream(_as_format_1(header, payload), {crans.calibration.id: crans.calibration})


def _as_format_1(header, payload: bytes) -> bytes:
    import struct
    import zlib

    v2 = bitstream.pack(header, payload)
    stream_at = len(v2) - 4 - len(payload) - 4 - 1  # the empty stream id (one length byte)
    assert v2[stream_at] == 0
    body = v2[:4] + bytes([1]) + v2[5:stream_at] + v2[stream_at + 1 : -4]
    return body + struct.pack("<I", zlib.crc32(body))


def test_wire_protocol_frames_are_pinned():
    request = Request(
        model="efficientnet_lite0",
        weights_id="153bf98ba91b079c",
        cut="blocks",
        codec="q4-ncc-crans-s2.5-pt",
        id="frame-000001",
        sent_at=1795439544.5,
    )
    frames = pack_request(request, b"\x01\x02")
    reply = Reply(
        id="frame-000001",
        indices=[281, 282],
        labels=["tabby", "tiger cat"],
        scores=[0.5, 0.25],
        timings={"decode_ms": 0.2, "batch_size": 4},
    )
    golden = json.loads(
        _check(
            "protocol-v1.json",
            json.dumps(
                {
                    "request": [f.decode("latin-1") for f in frames],
                    "reply": [f.decode("latin-1") for f in pack_reply(reply)],
                },
                indent=1,
            ).encode(),
            exact=True,
        )
    )
    assert golden["request"][0] == frames[0].decode()
