"""Uniform asymmetric n-bit quantization and clip-range selection.

Features are handled as ``(N, C, S)`` arrays (S = spatial elements). A clip range is a pair of
float32 arrays ``lo``, ``hi`` of shape ``(C,)`` (per channel) or ``(1,)`` (per tensor).
Values are clipped to ``[lo, hi]`` and mapped to the ``2**bits`` levels
``lo + k * (hi - lo) / (2**bits - 1)``; inside the range the error is at most half a step.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

# Tail fractions (each side) tried by the MSE-optimal clip search.
_MSE_TAILS = (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.06, 0.1, 0.16, 0.25, 0.35)
_MSE_SAMPLES = 8192


def symbol_dtype(bits: int) -> np.dtype:
    return np.dtype(np.uint8 if bits <= 8 else np.uint16)


def step_size(lo: np.ndarray, hi: np.ndarray, bits: int) -> np.ndarray:
    """float32 step per range (float32 arithmetic throughout: IEEE, the same everywhere)."""
    step = (np.asarray(hi, np.float32) - np.asarray(lo, np.float32)) / np.float32((1 << bits) - 1)
    return np.where(step > 0, step, np.float32(1.0)).astype(np.float32)


def quantize(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, bits: int) -> np.ndarray:
    """``x`` (N, C, S) float -> symbols (N, C, S) in ``0 .. 2**bits - 1``."""
    lo3 = np.asarray(lo, np.float32)[None, :, None]
    step3 = step_size(lo, hi, bits)[None, :, None]
    q = np.rint((np.asarray(x, np.float32) - lo3) / step3)
    return np.clip(q, 0, (1 << bits) - 1).astype(symbol_dtype(bits))


def dequantize(sym: np.ndarray, lo: np.ndarray, hi: np.ndarray, bits: int) -> np.ndarray:
    """Symbols (N, C, S) -> float32 reconstruction."""
    lo3 = np.asarray(lo, np.float32)[None, :, None]
    return lo3 + sym.astype(np.float32) * step_size(lo, hi, bits)[None, :, None]


def _channels(x: np.ndarray, scope: str) -> np.ndarray:
    """(N, C, S) -> rows of values, one row per channel (pc) or one row (pt)."""
    if scope == "pc":
        return np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)
    return x.reshape(1, -1)


def message_ranges(x: np.ndarray, scope: str) -> Tuple[np.ndarray, np.ndarray]:
    """Min/max of one message, per channel or per tensor."""
    rows = _channels(x, scope)
    return rows.min(axis=1).astype(np.float32), rows.max(axis=1).astype(np.float32)


def _subsample(rows: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    if rows.shape[1] <= n:
        return rows
    idx = np.random.default_rng(seed).choice(rows.shape[1], n, replace=False)
    return rows[:, np.sort(idx)]


def calibrated_ranges(
    x: np.ndarray,
    clip: str,
    scope: str,
    bits: int,
    percentile: Optional[float] = None,
    step_sigmas: Optional[float] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Clip ranges fitted on calibration features ``x`` (N, C, S).

    ``clip``: ``minmax``; ``pNN`` (percentile ``percentile`` and ``100 - percentile``);
    ``mse`` (pair of tail fractions minimising the quantization MSE at ``bits``);
    ``sX`` (step ``step_sigmas`` standard deviations, a level exactly at the mean, the
    ``2**bits`` levels spread around it: a mid-tread uniform quantizer, whose rate is set by
    the step rather than the bit depth when entropy-coded). ``sX`` ranges are always per
    channel (each centred on its channel's mean); ``scope`` ``pt`` shares one step (X times the
    tensor's standard deviation), ``pc`` scales it with each channel's deviation.
    """
    rows = _channels(x, scope).astype(np.float64)
    if step_sigmas is not None:  # centred per channel; scope only decides the step
        step = step_sigmas * rows.std(axis=1)
        levels = (1 << bits) - 1
        lo = _channels(x, "pc").mean(axis=1) - (levels // 2) * step
        hi = lo + levels * step
    elif clip == "minmax":
        lo, hi = rows.min(axis=1), rows.max(axis=1)
    elif percentile is not None:
        lo = np.percentile(rows, 100.0 - percentile, axis=1)
        hi = np.percentile(rows, percentile, axis=1)
    elif clip == "mse":
        lo, hi = _mse_ranges(_subsample(rows, _MSE_SAMPLES), bits)
    else:
        raise ValueError(f"unknown clip method {clip!r}")
    return lo.astype(np.float32), hi.astype(np.float32)


def _mse_ranges(rows: np.ndarray, bits: int) -> Tuple[np.ndarray, np.ndarray]:
    tails = np.asarray(_MSE_TAILS)
    lows = np.quantile(rows, tails, axis=1)  # (T, R)
    highs = np.quantile(rows, 1.0 - tails, axis=1)
    levels = (1 << bits) - 1
    best = np.full(rows.shape[0], np.inf)
    best_lo, best_hi = lows[0].copy(), highs[0].copy()
    for lo in lows:
        for hi in highs:
            ok = hi > lo
            step = np.where(ok, (hi - lo) / levels, 1.0)[:, None]
            q = np.clip(np.rint((rows - lo[:, None]) / step), 0, levels)
            err = ((lo[:, None] + q * step - rows) ** 2).mean(axis=1)
            better = ok & (err < best)
            best = np.where(better, err, best)
            best_lo = np.where(better, lo, best_lo)
            best_hi = np.where(better, hi, best_hi)
    return best_lo, best_hi
