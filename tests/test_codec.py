"""Feature codec: specs, round trips, bitstream validation, calibration files."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch

from edgecloud.codec import (
    BitstreamError,
    CalibrationError,
    CodecCalibration,
    CodecSpecError,
    FeatureCodec,
    bitstream,
    coders,
    decode_bitstream,
    load_calibrations,
    parse_spec,
    peek_header,
    quantizer,
    repack,
)

SHAPE = (20, 6, 5)

LOSSLESS = ["raw", "f32-none", "f32-zlib", "f32-zstd", "f32-lz4"]
# quantized specs whose symbols survive the coder exactly
EXACT_SYMBOLS = [
    "q8-ncc-zstd",
    "q8-ncc-none",
    "q1-ncc-zlib",
    "q3-ct-lz4",
    "q5-ncc-zstd-msg-pc",
    "q12-ct-zstd",
    "q16-ncc-none",
    "q16-ct-png",
    "q8-ct-png",
    "q4-ncc-png",
    "q6-ct-webp",
    "q4-ccd-rans",
    "q2-ncc-rans-p99.5-pt",
    "q1-ncc-rans-msg-pc",
    "q10-ct-rans-minmax-pc",
    "q6-ccd-zstd-mse-pt",
    "q7-ct-zlib-minmax-pt",
    "q4-ncc-crans-s2-pt",
    "q3-ccd-crans",
    "q5-ct-rans-s0.5-pc",
]
LOSSY_IMAGE = ["q8-ct-jpeg90", "q6-ct-webp90", "q8-ncc-webp75"]
ALL_SPECS = LOSSLESS + ["f16-zstd", "f16-none"] + EXACT_SYMBOLS + LOSSY_IMAGE


def _features(n: int, seed: int) -> np.ndarray:
    """Laplacian-ish features with per-channel scales and one constant channel."""
    rng = np.random.default_rng(seed)
    scale = np.linspace(0.2, 3.0, SHAPE[0], dtype=np.float32)[None, :, None, None]
    x = (rng.laplace(size=(n,) + SHAPE) * scale).astype(np.float32)
    x[:, 7] = 0.25
    return x


@pytest.fixture(scope="module")
def calib_features() -> np.ndarray:
    return _features(24, seed=1)


@pytest.fixture(scope="module")
def feature() -> np.ndarray:
    return _features(1, seed=2)[0]


def _codec(spec: str, calib_features: np.ndarray) -> FeatureCodec:
    parsed = parse_spec(spec)
    cal = CodecCalibration.fit(calib_features, parsed) if parsed.needs_calibration else None
    return FeatureCodec.from_spec(spec, cal)


def _reference(codec: FeatureCodec, x: np.ndarray) -> np.ndarray:
    """Expected reconstruction of an exact-symbol codec, computed without any coder."""
    spec, cal = codec.spec, codec.calibration
    x3 = x.reshape(1, SHAPE[0], -1)
    if spec.clip == "msg":
        lo, hi = quantizer.message_ranges(x3, spec.scope)
        fill = np.broadcast_to(lo, (SHAPE[0],))
        keep = hi > lo if spec.scope == "pc" else np.ones(SHAPE[0], bool)
    else:
        lo, hi, fill, keep = cal.lo, cal.hi, cal.fill, cal.keep
    out = quantizer.dequantize(quantizer.quantize(x3, lo, hi, spec.bits), lo, hi, spec.bits)
    out[:, ~keep] = np.asarray(fill)[~keep][None, :, None]
    return out.reshape(x.shape)


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_every_spec_round_trips_through_the_bitstream(spec, feature, calib_features):
    codec = _codec(spec, calib_features)
    data = codec.encode(feature)
    header = peek_header(data)
    assert header.spec == codec.name == parse_spec(spec).canonical
    assert header.shape == feature.shape and header.total_size == len(data)
    cals = {codec.calibration.id: codec.calibration} if codec.calibration else None
    out = decode_bitstream(data, cals)
    assert out.shape == feature.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out, codec.decode(data))
    batch = np.stack([feature, feature * 0.5])
    assert codec.decode(codec.encode(torch.from_numpy(batch))).shape == batch.shape


@pytest.mark.parametrize("spec", LOSSLESS)
def test_lossless_codecs_are_bit_exact(spec, feature):
    codec = FeatureCodec.from_spec(spec)
    assert np.array_equal(codec.decode(codec.encode(feature)), feature)


def test_f16_matches_a_float16_cast(feature):
    out = FeatureCodec.from_spec("f16-zstd").decode(
        FeatureCodec.from_spec("f16-zstd").encode(feature)
    )
    np.testing.assert_array_equal(out, feature.astype(np.float16).astype(np.float32))


@pytest.mark.parametrize("spec", EXACT_SYMBOLS)
def test_quantized_codecs_reproduce_the_quantizer_exactly(spec, feature, calib_features):
    codec = _codec(spec, calib_features)
    out = codec.decode(codec.encode(feature))
    np.testing.assert_array_equal(out, _reference(codec, feature))


@pytest.mark.parametrize("bits", [1, 2, 4, 8, 12, 16])
@pytest.mark.parametrize("scope", ["pt", "pc"])
def test_per_message_error_is_within_half_a_step(bits, scope, feature):
    codec = FeatureCodec.from_spec(f"q{bits}-ncc-zstd-msg-{scope}")
    out = codec.decode(codec.encode(feature))
    x3 = feature.reshape(1, SHAPE[0], -1)
    lo, hi = quantizer.message_ranges(x3, scope)
    step = np.broadcast_to((hi - lo) / (2**bits - 1), (SHAPE[0],))[:, None, None]
    assert np.all(np.abs(out - feature) <= step / 2 * (1 + 1e-5) + 1e-6)


def test_calibrated_clipping_bounds_the_error_inside_the_range(feature, calib_features):
    codec = _codec("q4-ncc-zstd-p99-pc", calib_features)
    cal = codec.calibration
    out = codec.decode(codec.encode(feature))
    lo, hi = cal.lo[:, None, None], cal.hi[:, None, None]
    inside = (feature >= lo) & (feature <= hi) & cal.keep[:, None, None]
    step = (hi - lo) / 15
    err = np.abs(out - feature)
    assert inside.mean() > 0.9
    assert np.all((err <= step / 2 * (1 + 1e-5) + 1e-6)[inside])
    assert np.all(out >= lo - 1e-6) and np.all(out <= hi + 1e-6)


@pytest.mark.parametrize("spec", LOSSY_IMAGE)
def test_lossy_image_codecs_stay_close(spec, feature):
    codec = FeatureCodec.from_spec(spec)
    out = codec.decode(codec.encode(feature))
    rel = np.sqrt(np.mean((out - feature) ** 2)) / feature.std()
    assert rel < 0.3  # i.i.d. Laplacian noise is the worst case for image codecs


@pytest.mark.parametrize("coder", ["jpeg", "webp"])
def test_lossy_image_quality_trades_bytes_for_error(coder, feature):
    sizes, errors = [], []
    for quality in (30, 70, 95):
        codec = FeatureCodec.from_spec(f"q8-ct-{coder}{quality}")
        data = codec.encode(feature)
        sizes.append(len(data))
        errors.append(float(np.mean((codec.decode(data) - feature) ** 2)))
    assert sizes == sorted(sizes) and errors == sorted(errors, reverse=True)


def test_more_bits_cost_more_bytes_and_less_error(feature):
    sizes, errors = [], []
    for bits in (2, 4, 6, 8):
        codec = FeatureCodec.from_spec(f"q{bits}-ncc-zstd")
        data = codec.encode(feature)
        sizes.append(len(data))
        errors.append(np.mean((codec.decode(data) - feature) ** 2))
    assert sizes == sorted(sizes) and errors == sorted(errors, reverse=True)


def test_constant_channels_are_pruned_and_restored(feature, calib_features):
    codec = _codec("q4-ccd-rans", calib_features)
    assert not codec.calibration.keep[7] and codec.calibration.keep.sum() == SHAPE[0] - 1
    data = codec.encode(feature)
    assert peek_header(data).keep is None  # by reference: the calibration's mask
    np.testing.assert_allclose(codec.decode(data)[7], 0.25, atol=1e-6)
    msg = FeatureCodec.from_spec("q4-ncc-zstd-msg-pc")
    data = msg.encode(feature)
    assert not peek_header(data).keep[7] and peek_header(data).keep.sum() == SHAPE[0] - 1
    np.testing.assert_allclose(msg.decode(data)[7], 0.25, atol=1e-6)
    assert peek_header(FeatureCodec.from_spec("q4-ncc-zstd").encode(feature)).keep is None


def test_rans_is_close_to_the_empirical_entropy(calib_features):
    codec = _codec("q3-ncc-rans-minmax-pc", calib_features)
    cal = codec.calibration
    x = _features(64, seed=5)
    data = codec.encode(x)
    sym = quantizer.quantize(x.reshape(64, SHAPE[0], -1), cal.lo, cal.hi, 3)[:, cal.keep]
    entropy_bits = 0.0
    for ch in np.moveaxis(sym, 1, 0).reshape(int(cal.keep.sum()), -1):
        p = np.bincount(ch, minlength=8) / ch.size
        entropy_bits -= ch.size * np.sum(p[p > 0] * np.log2(p[p > 0]))
    payload = peek_header(data).payload_size
    assert payload * 8 < entropy_bits * 1.1 + 64
    zstd = _codec("q3-ncc-zstd-minmax-pc", calib_features)  # same symbols, zstd-coded
    assert payload < peek_header(zstd.encode(x)).payload_size


def test_step_clip_centres_a_level_on_each_channel_mean(calib_features):
    cal = CodecCalibration.fit(calib_features, "q4-ncc-rans-s1.5-pt")
    x = calib_features.reshape(len(calib_features), SHAPE[0], -1).astype(np.float64)
    mean, step = x.mean(axis=(0, 2)), 1.5 * x.std()
    np.testing.assert_allclose((cal.hi - cal.lo)[cal.keep], 15 * step, rtol=1e-5)
    np.testing.assert_allclose(((mean - cal.lo) / step)[cal.keep], 7.0, rtol=1e-5)


def test_context_rans_beats_per_channel_rans_on_clustered_activity():
    rng = np.random.default_rng(7)

    def clustered(n):  # active pixels come in spatial blobs, as in real feature maps
        blobs = rng.random((n, 8, 4, 4)) < 0.3
        mask = np.kron(blobs, np.ones((1, 1, 4, 4)))
        return (rng.laplace(size=mask.shape) * (0.05 + 3 * mask)).astype(np.float32)

    calib, x = clustered(64), clustered(16)
    sizes, decoded = {}, {}
    for coder in ("rans", "crans"):
        spec = f"q4-ncc-{coder}-s1-pt"
        codec = FeatureCodec.from_spec(spec, CodecCalibration.fit(calib, spec))
        data = codec.encode(x)
        sizes[coder] = peek_header(data).payload_size
        decoded[coder] = codec.decode(data)
    np.testing.assert_array_equal(decoded["crans"], decoded["rans"])  # same symbols
    assert sizes["crans"] < 0.9 * sizes["rans"]


def test_ccd_permutation_orders_similar_channels_together():
    rng = np.random.default_rng(3)
    base = rng.standard_normal((4, 1, 36))
    x = np.concatenate([base, base + 5, base + 0.01, base + 5.01], axis=1)
    perm = repack.ccd_permutation(x)
    assert sorted(perm.tolist()) == [0, 1, 2, 3]
    assert perm.tolist() == [0, 2, 1, 3] or perm.tolist() == [0, 2, 3, 1]


@pytest.mark.parametrize("channels", [1, 5, 16, 80])
def test_tiling_round_trips(channels):
    sym = np.arange(2 * channels * 12).reshape(2, channels, 12).astype(np.uint16)
    for tiled in (True, False):
        frame = repack.to_frame(sym, 3, 4, tiled)
        assert frame.shape == repack.frame_shape(2, channels, 3, 4, tiled)
        np.testing.assert_array_equal(repack.from_frame(frame, 2, channels, 3, 4, tiled), sym)
    rows, cols = repack.tile_grid(channels)
    assert rows * cols >= channels and abs(rows - cols) <= 1


@pytest.mark.parametrize("bits", range(1, 17))
def test_bit_packing_round_trips(bits):
    sym = np.random.default_rng(bits).integers(0, 2**bits, size=101)
    packed = coders.pack_bits(sym.astype(quantizer.symbol_dtype(bits)), bits)
    assert len(packed) == coders.packed_size(101, bits)
    np.testing.assert_array_equal(coders.unpack_bits(packed, bits, 101), sym)


def test_vector_features_are_supported():
    x = np.random.default_rng(0).standard_normal((3, 50)).astype(np.float32)
    cal = CodecCalibration.fit(x, "q6-ncc-rans-minmax-pc")
    codec = FeatureCodec.from_spec("q6-ncc-rans-minmax-pc", cal)
    assert codec.decode(codec.encode(x)).shape == (3, 50)
    assert np.abs(codec.decode(codec.encode(x[0])) - x[0]).max() < 0.2


# ---- spec strings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("raw", "raw"),
        ("F16-ZSTD", "f16-zstd"),
        ("q8-ncc-zstd", "q8-ncc-zstd-msg-pt"),
        ("q4-ccd-rans", "q4-ccd-rans-mse-pc"),
        ("q4-ncc-rans-msg", "q4-ncc-rans-msg-pt"),
        ("q8-ct-png-pc", "q8-ct-png-msg-pc"),
        ("q6-ct-webp90", "q6-ct-webp90-msg-pt"),
        ("q3-ct-zstd-p99.9", "q3-ct-zstd-p99.9-pc"),
        ("q2-ncc-lz4-mse-pt", "q2-ncc-lz4-mse-pt"),
        ("jpeg-input-q75", "jpeg-input-q75"),
        ("q4-ncc-crans-s2.5-pt", "q4-ncc-crans-s2.5-pt"),
        ("q4-ncc-crans", "q4-ncc-crans-mse-pc"),
    ],
)
def test_spec_canonical_forms(text, canonical):
    assert parse_spec(text).canonical == canonical
    assert parse_spec(canonical).canonical == canonical


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "zip",
        "q0-ncc-zstd",
        "q17-ncc-zstd",
        "q8-xyz-zstd",
        "q8-ncc-gzip",
        "q8-ncc",
        "q13-ncc-rans",
        "q10-ct-jpeg90",
        "q8-ct-jpeg",
        "q8-ct-webp101",
        "q8-ncc-zstd-pc-msg",
        "q8-ncc-zstd-p40",
        "f16-rans",
        "jpeg-input-q0",
        "q4-ncc-crans-s0",
        "q13-ncc-crans",
    ],
)
def test_bad_specs_are_rejected(bad):
    with pytest.raises(CodecSpecError):
        parse_spec(bad)


def test_specs_needing_calibration_refuse_to_run_without(calib_features):
    for spec in ("q4-ccd-rans", "q8-ncc-zstd-mse", "q4-ncc-rans-msg"):
        with pytest.raises(CalibrationError, match="needs a calibration"):
            FeatureCodec.from_spec(spec)
    cal = CodecCalibration.fit(calib_features, "q4-ccd-rans")
    with pytest.raises(CalibrationError, match="fitted for"):
        FeatureCodec.from_spec("q3-ccd-rans", cal)
    codec = FeatureCodec.from_spec("q4-ccd-rans", cal)
    with pytest.raises(CalibrationError, match="channels"):
        codec.encode(np.zeros((7, 2, 2), np.float32))
    with pytest.raises(CodecSpecError):
        FeatureCodec.from_spec("jpeg-input-q90")


def test_bad_features_are_rejected():
    codec = FeatureCodec.from_spec("q8-ncc-zstd")
    for bad in (np.zeros((1, 2, 3, 4, 5)), np.zeros((0, 3)), np.array([1.0, np.nan])):
        with pytest.raises(CodecSpecError):
            codec.encode(bad)


# ---- damaged bitstreams ---------------------------------------------------------------------


def _reseal(body: bytes) -> bytes:
    """Recompute the CRC of a modified stream (to reach checks behind the CRC)."""
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize("spec", ["raw", "q8-ncc-zstd", "q4-ccd-rans", "q8-ct-png"])
def test_truncated_streams_are_rejected(spec, feature, calib_features):
    codec = _codec(spec, calib_features)
    data = codec.encode(feature)
    for n in range(len(data)):
        with pytest.raises(BitstreamError):
            codec.decode(data[:n])
    with pytest.raises(BitstreamError, match="trailing"):
        codec.decode(data + b"\0")


@pytest.mark.parametrize("spec", ["f16-zstd", "q8-ncc-zstd", "q4-ccd-rans", "q6-ct-webp90"])
def test_every_corrupted_byte_is_detected(spec, feature, calib_features):
    codec = _codec(spec, calib_features)
    data = codec.encode(feature)
    for pos in range(0, len(data), max(1, len(data) // 300)):
        damaged = bytearray(data)
        damaged[pos] ^= 0x5A
        with pytest.raises(BitstreamError):
            codec.decode(bytes(damaged))


def test_wrong_magic_and_version_are_named(feature):
    data = FeatureCodec.from_spec("q8-ncc-zstd").encode(feature)
    with pytest.raises(BitstreamError, match="not an edgecloud"):
        decode_bitstream(b"JUNK" + data[4:])
    wrong = _reseal(data[:4] + bytes([bitstream.FORMAT_VERSION + 1]) + data[5:-4])
    with pytest.raises(BitstreamError, match="version 3"):
        decode_bitstream(wrong)
    with pytest.raises(BitstreamError):
        decode_bitstream("not bytes")  # type: ignore[arg-type]


def test_payload_that_passes_the_crc_but_does_not_decode_is_rejected(feature):
    data = FeatureCodec.from_spec("q8-ncc-zstd").encode(feature)
    header, payload = bitstream.unpack(data)
    bad = bitstream.pack(header, payload[: len(payload) // 2])
    with pytest.raises(BitstreamError, match="zstd"):
        decode_bitstream(bad)
    bad_spec = bitstream.pack(
        bitstream.BitstreamHeader(1, "q8-ncc-zip-msg-pt", "float32", header.shape), payload
    )
    with pytest.raises(BitstreamError, match="unknown codec"):
        decode_bitstream(bad_spec)


def test_wrong_or_missing_calibration_is_rejected(feature, calib_features):
    cal = CodecCalibration.fit(calib_features, "q4-ccd-rans", name="lite0-test")
    other = CodecCalibration.fit(calib_features[:12], "q4-ccd-rans", name="lite0-test")
    data = FeatureCodec.from_spec("q4-ccd-rans", cal).encode(feature)
    header = peek_header(data)
    assert header.calibration_id == "lite0-test" and cal.hash.startswith(header.calibration_hash)
    with pytest.raises(BitstreamError, match="not provided"):
        decode_bitstream(data)
    with pytest.raises(BitstreamError, match="wrong calibration"):
        decode_bitstream(data, {"lite0-test": other})
    with pytest.raises(BitstreamError, match="wrong calibration"):
        FeatureCodec.from_spec("q4-ccd-rans", other).decode(data)
    np.testing.assert_array_equal(
        decode_bitstream(data, {"lite0-test": cal}),
        FeatureCodec.from_spec("q4-ccd-rans", cal).decode(data),
    )


def test_garbage_never_decodes():
    rng = np.random.default_rng(0)
    for n in (0, 3, 20, 500):
        with pytest.raises(BitstreamError):
            decode_bitstream(bytes(rng.integers(0, 256, n, dtype=np.uint8)))


# ---- calibration files ------------------------------------------------------------------------


def test_calibration_file_round_trip(tmp_path, feature, calib_features):
    cal = CodecCalibration.fit(calib_features, "q3-ccd-rans-p99.9-pc", model="synthetic")
    path = cal.save(tmp_path)
    assert path.name == f"{cal.id}.npz" and path.stat().st_size < 20_000
    loaded = CodecCalibration.load(path)
    assert loaded.hash == cal.hash and loaded.id == cal.id
    assert set(load_calibrations(tmp_path)) == {cal.id}
    assert loaded.meta == {"model": "synthetic", "calibration_images": 24}
    data = FeatureCodec.from_spec("q3-ccd-rans-p99.9-pc", cal).encode(feature)
    np.testing.assert_array_equal(
        FeatureCodec.from_spec("q3-ccd-rans-p99.9-pc", loaded).decode(data),
        decode_bitstream(data, {cal.id: cal}),
    )


def test_damaged_calibration_files_are_rejected(tmp_path, calib_features):
    with pytest.raises(CalibrationError, match="does not exist"):
        CodecCalibration.load(tmp_path / "missing.npz")
    with pytest.raises(CalibrationError, match="does not exist"):
        load_calibrations(tmp_path / "nowhere")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(CalibrationError, match="unreadable"):
        CodecCalibration.load(tmp_path / "junk.npz")
    path = CodecCalibration.fit(calib_features, "q4-ncc-zstd-minmax-pc").save(tmp_path)
    with np.load(path) as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays["lo"] = arrays["lo"] + 1.0  # content no longer matches the recorded hash
    np.savez(path, **arrays)
    with pytest.raises(CalibrationError, match="hash mismatch"):
        CodecCalibration.load(path)
    arrays["header"] = np.asarray('{"version": 99}')
    np.savez(path, **arrays)
    with pytest.raises(CalibrationError, match="version 99"):
        CodecCalibration.load(path)
    with pytest.raises(CalibrationError, match="nothing to calibrate"):
        CodecCalibration.fit(calib_features, "f16-zstd")
