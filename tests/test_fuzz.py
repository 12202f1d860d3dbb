"""Property-based fuzzing of what the daemon accepts from the network.

The bitstream decoder gets random bytes and real streams (of every coder family, calibrated
ones included) truncated, bit-flipped and **CRC-forged** with mutated header fields; it must
either return the expected shape or raise :class:`BitstreamError`, and never allocate more
than a small multiple of the expected tensor. The request parser gets random and mutated
headers and must either parse or raise :class:`BadRequest`. ``benchmarks/fuzz_daemon.py``
runs the same generators for 100,000 messages against a live daemon.
"""

from __future__ import annotations

import json
import struct
import tracemalloc

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecloud.codec import FeatureCodec, bitstream, decode_bitstream
from edgecloud.codec.bitstream import BitstreamHeader
from edgecloud.errors import BitstreamError
from edgecloud.presets import preset_calibrations
from edgecloud.transport import BadRequest, Request, pack_request, unpack_request

SHAPE = (320, 7, 7)  # Lite0 cut "blocks", where the shipped crans preset applies
SPECS = [
    "raw",
    "f16-zstd",
    "f32-lz4",
    "q8-ncc-zstd",
    "q4-ncc-zlib",
    "q3-ct-none",
    "q8-ct-png",
    "q12-ct-png",
    "q8-ncc-webp",
    "q8-ct-jpeg80",
    "q4-ncc-crans-s2.5-pt",
    "q8-ct-h264-qp44",  # video coders (PyAV): the low-rate codecs of docs/codec.md
    "q8-ct-av1-crf53",
]
#: peak bytes a decode may allocate: the decoded float32 tensor, its work arrays and slack
BUDGET = 64 * 4 * int(np.prod(SHAPE)) + (1 << 20)
FUZZ = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)


def _calibrations():
    return preset_calibrations()


def _streams():
    """One real-feature-like stream per spec (Lite0 'blocks' statistics: ReLU6 outputs)."""
    rng = np.random.default_rng(0)
    feature = np.clip(rng.gamma(0.6, 1.0, SHAPE), 0, 6).astype(np.float32)
    feature[rng.random(SHAPE) < 0.5] = 0.0
    cals = {c.spec: c for c in _calibrations().values() if c.channels == SHAPE[0]}
    return {spec: FeatureCodec.from_spec(spec, cals.get(spec)).encode(feature) for spec in SPECS}


STREAMS = _streams()


def _decode_checked(data: bytes) -> None:
    """The property: expected shape or BitstreamError, within the allocation budget."""
    tracemalloc.start()
    try:
        out = decode_bitstream(data, _calibrations(), shape=SHAPE)
    except BitstreamError:
        out = None
    finally:
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak <= BUDGET, f"decode allocated {peak} bytes (budget {BUDGET})"
    if out is not None:
        assert out.shape in (SHAPE, (1, *SHAPE)) and out.dtype == np.float32


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(data):
    _decode_checked(data)
    _decode_checked(bitstream.MAGIC + bytes([bitstream.FORMAT_VERSION]) + data)


@FUZZ
@given(st.sampled_from(SPECS), st.data())
def test_truncated_and_bit_flipped_streams(spec, data):
    stream = bytearray(STREAMS[spec])
    cut = data.draw(st.integers(0, len(stream)))
    _decode_checked(bytes(stream[:cut]))
    for position in data.draw(st.lists(st.integers(0, len(stream) - 1), max_size=8)):
        stream[position] ^= 1 << data.draw(st.integers(0, 7))
    _decode_checked(bytes(stream))


_dims = st.integers(0, (1 << 32) - 1) | st.sampled_from([0, 1, 7, 49, 320, 1 << 16, 1 << 30])
_fields = {
    "spec": st.sampled_from(SPECS + ["q9-ncc-crans-s2.5-pt", "q8-ct-webp", "jpeg-input-q75"])
    | st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-", max_size=40),
    "dtype": st.sampled_from(["float32", "float16", "int8", ""]),
    "shape": st.lists(_dims, min_size=1, max_size=6).map(tuple)
    | st.sampled_from([SHAPE, (1, *SHAPE), (SHAPE[0],), (2, *SHAPE)]),
    "calibration_id": st.sampled_from(["", "643080a4", "856d402e", "nope"]),
    "calibration_hash": st.sampled_from(["00" * 8, "ff" * 8]),
    "lo": st.none() | st.integers(0, 400).map(lambda n: np.zeros(n, np.float32)),
    "hi": st.none() | st.integers(0, 400).map(lambda n: np.full(n, np.inf, np.float32)),
    "keep": st.none() | st.integers(0, 400).map(lambda n: np.ones(n, bool)),
}


@FUZZ
@given(st.sampled_from(SPECS), st.data())
def test_crc_forged_streams_with_mutated_fields(spec, data):
    header, payload = bitstream.unpack(STREAMS[spec])
    fields = dict(header.__dict__)
    for name in data.draw(st.lists(st.sampled_from(sorted(_fields)), min_size=1, max_size=3)):
        fields[name] = data.draw(_fields[name])
    if fields["calibration_id"] and not fields["calibration_hash"]:
        fields["calibration_hash"] = "00" * 8
    if data.draw(st.booleans()):
        payload = data.draw(st.binary(max_size=2048)) if data.draw(st.booleans()) else payload[::-1]
    try:
        forged = bitstream.pack(BitstreamHeader(**fields), payload)
    except (struct.error, ValueError, TypeError):
        return  # the field cannot be written at all (e.g. a dimension over u32)
    _decode_checked(forged)


_header_values = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80)
_header_values = _header_values | st.lists(_header_values, max_size=3)


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(Request.__dataclass_fields__) + ["x"]),
                       _header_values, max_size=12), st.binary(max_size=64))  # fmt: skip
def test_request_parser(fields, payload):
    good = json.loads(pack_request(Request(model="m", weights_id="w", cut="c", codec="raw"))[0])
    for frames in (
        [json.dumps(fields).encode()],
        [json.dumps({**good, **fields}).encode(), payload],
    ):
        try:
            request, _payload = unpack_request(frames)
        except BadRequest as exc:
            assert exc.code and str(exc)
            continue
        assert isinstance(request.id, str) and 1 <= len(request.id) <= 64


@FUZZ
@given(st.binary(max_size=5000) | st.just(b"[" * 3000), st.integers(0, 4))
def test_request_parser_raw_frames(raw, extra_frames):
    try:  # only BadRequest may come out
        unpack_request([raw] + [b"x"] * extra_frames)
    except BadRequest as exc:
        assert exc.code
