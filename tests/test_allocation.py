"""Rate–distortion bit allocation (rdX specs) on real EfficientNet-Lite0 features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgecloud.codec import CodecCalibration, FeatureCodec, allocation, parse_spec, quantizer
from edgecloud.codec.arrays import to_ncs
from edgecloud.errors import CalibrationError, CodecSpecError
from edgecloud.partition import split
from edgecloud.partition.sensitivity import channel_sensitivity


@pytest.fixture(scope="module")
def blocks(lite0, sample_images):
    """(tail, calibration features, held-out features, sensitivity) at cut ``blocks``."""
    head, tail = split(lite0, "blocks")
    with torch.inference_mode():
        feats = head(sample_images(96)).numpy()
    calib, held_out = feats[:64], feats[64:]
    return tail, calib, held_out, channel_sensitivity(tail, calib, images=16)


def _rate_and_distortion(x, lo, hi, dropped, weights, bits=4):
    """Measured zero-order rate (bits/element) and sensitivity-weighted distortion of a
    quantizer on features ``x`` (N, C, S)."""
    sym = quantizer.quantize(x, lo, hi, bits)
    rec = quantizer.dequantize(sym, lo, hi, bits)
    rec[:, dropped] = x.mean(axis=(0, 2))[dropped][None, :, None]
    element, pooled = allocation._errors(rec - x)
    rows = np.moveaxis(sym, 1, 0).reshape(x.shape[1], -1).astype(np.int64)
    rate = np.where(dropped, 0.0, allocation._entropy_bits(rows, 1 << bits)).mean()
    return rate, float((weights[0] * element + weights[1] * pooled).sum())


def test_sensitivity_is_positive_and_pooled_noise_matters_more(blocks):
    _, _, _, sens = blocks
    assert sens.shape == (2, 320) and (sens > 0).all()
    assert np.median(sens[1] / sens[0]) > 3  # the tail pools: a map-wide offset costs more


def test_allocation_beats_uniform_step_at_the_same_rate_on_held_out_features(blocks):
    _, calib, held_out, sens = blocks
    x_cal, x_eval = to_ncs(calib), to_ncs(held_out)
    for sigmas in (2.0, 3.0):  # the uniform step of the shipped presets' family
        lo, hi = quantizer.calibrated_ranges(x_cal, "s", "pt", 4, step_sigmas=sigmas)
        none = np.zeros(320, dtype=bool)
        target, _ = _rate_and_distortion(x_cal, lo, hi, none, sens)  # both fitted on x_cal
        plan = allocation.allocate(x_cal, sens, 4, target_rate=target)
        rate_u, dist_u = _rate_and_distortion(x_eval, lo, hi, none, sens)
        rate_a, dist_a = _rate_and_distortion(x_eval, plan.lo, plan.hi, plan.dropped, sens)
        assert rate_a <= rate_u * 1.02, (sigmas, rate_a, rate_u)
        assert dist_a < 0.95 * dist_u, (sigmas, dist_a, dist_u)


def test_rd_spec_calibrates_and_round_trips(blocks):
    _, calib, held_out, sens = blocks
    spec = parse_spec("q4-ncc-crans-rd0.8")
    assert spec.canonical == "q4-ncc-crans-rd0.8-pc" and spec.target_rate == 0.8
    cal = CodecCalibration.fit(calib, spec, sensitivity=sens)
    assert 0.7 < cal.meta["predicted_bits_per_element"] <= 0.8
    codec = FeatureCodec(spec, cal)
    data = codec.encode(held_out[0])
    out = codec.decode(data)
    assert out.shape == held_out[0].shape
    assert 8 * len(data) / held_out[0].size < 1.0  # crans spends less than the zero-order target


def test_rd_needs_sensitivity_and_a_sane_target(blocks):
    _, calib, _, _ = blocks
    with pytest.raises(CalibrationError, match="sensitivity"):
        CodecCalibration.fit(calib, "q4-ncc-crans-rd0.8")
    with pytest.raises(CalibrationError, match=r"\(2, 320\)"):
        CodecCalibration.fit(calib, "q4-ncc-crans-rd0.8", sensitivity=np.ones(320))
    for bad in ("q4-ncc-crans-rd5", "q4-ncc-crans-rd0.5-pt", "q4-ncc-crans-rd0"):
        with pytest.raises(CodecSpecError):
            parse_spec(bad)
