"""Rate–distortion bit allocation: one quantizer step per channel, chosen by sensitivity.

Each channel ``c`` gets a mid-tread uniform quantizer (a level at the channel's calibration
mean, ``2**bits`` levels) whose step is picked from :data:`STEP_GRID` (in units of the
channel's standard deviation), or is dropped (not sent, decoded as its mean). On calibration
features, for every step, the rate ``R_c`` (zero-order entropy of the symbols, bits per
element, clipping included) and two parts of the error are measured: the per-image offset of
the whole map (``P_c``, mean over the map of the error, squared) and the rest (``E_c``, the
element-wise mean squared error around that offset). With the task's sensitivities to each
part (``w_e``, ``w_p``: KL divergence per unit noise variance,
:func:`edgecloud.partition.sensitivity.channel_sensitivity`) the expected task distortion is
``sum_c w_e[c] E_c + w_p[c] P_c``; the allocation minimises it plus ``λ R_c`` per channel and
bisects on ``λ`` until the mean rate meets the target (reverse water-filling over the
measured rate model). The context-adaptive coder (``crans``) then spends less than the
zero-order entropy the target is stated in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: steps tried per channel, in units of the channel's standard deviation
STEP_GRID = np.geomspace(0.05, 8.0, 48)
_VALUES = 8192  # calibration values per channel the tables are measured on (whole maps)
_BISECTIONS = 60


@dataclass(frozen=True)
class Allocation:
    """Per-channel clip ranges of the chosen steps, which channels are dropped, and the rate
    and task distortion the calibration features predict."""

    lo: np.ndarray  # (C,) float32
    hi: np.ndarray  # (C,) float32
    dropped: np.ndarray  # (C,) bool
    rate: float  # predicted mean bits per element (zero-order entropy)
    distortion: float  # predicted KL divergence, sum over channels


@dataclass(frozen=True)
class RateDistortionTable:
    """Per channel (rows) and step (columns; the last one = dropped): the rate and the two
    error parts of :mod:`this module <edgecloud.codec.allocation>`."""

    mean: np.ndarray  # (C,)
    std: np.ndarray  # (C,)
    rate: np.ndarray  # (C, G + 1) bits per element
    element: np.ndarray  # (C, G + 1) element-wise squared error around the map's offset
    pooled: np.ndarray  # (C, G + 1) squared per-image offset of the map

    def distortion(self, sensitivity: np.ndarray) -> np.ndarray:
        """(C, G + 1) predicted KL divergence for sensitivities (2, C)."""
        return sensitivity[0][:, None] * self.element + sensitivity[1][:, None] * self.pooled


def _entropy_bits(symbols: np.ndarray, levels: int) -> np.ndarray:
    """Zero-order entropy (bits/symbol) of each row of ``symbols`` (R, M)."""
    rows, m = symbols.shape
    offsets = (np.arange(rows) * levels)[:, None]
    counts = np.bincount((symbols + offsets).ravel(), minlength=rows * levels)
    p = counts.reshape(rows, levels) / m
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log2(p), 0.0).sum(axis=1)


def _errors(err: np.ndarray):
    """(element, pooled) error parts per channel of errors (N, C, S)."""
    offset = err.mean(axis=2, keepdims=True)
    return ((err - offset) ** 2).mean(axis=(0, 2)), (offset[:, :, 0] ** 2).mean(axis=0)


def ranges(mean: np.ndarray, step: np.ndarray, bits: int):
    """Clip ranges (lo, hi) of mid-tread quantizers: a level at ``mean``, ``2**bits`` levels."""
    levels = (1 << bits) - 1
    lo = mean - (levels // 2) * step
    return lo, lo + levels * step


def rate_distortion_table(x: np.ndarray, bits: int) -> RateDistortionTable:
    """The table of features ``x`` (N, C, S), measured on whole maps of up to
    ``_VALUES // S`` images."""
    x = np.asarray(x, np.float64)
    x = x[: max(1, _VALUES // x.shape[2])]
    mean = x.mean(axis=(0, 2))
    std = x.std(axis=(0, 2))
    sigma = np.where(std > 0, std, 1.0)
    levels = 1 << bits
    shape = (x.shape[1], len(STEP_GRID) + 1)
    rate, element, pooled = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for j, g in enumerate(STEP_GRID):
        step = g * sigma
        lo, _ = ranges(mean, step, bits)
        q = np.clip(np.rint((x - lo[:, None]) / step[:, None]), 0, levels - 1)
        element[:, j], pooled[:, j] = _errors(lo[:, None] + q * step[:, None] - x)
        rate[:, j] = _entropy_bits(np.moveaxis(q, 1, 0).reshape(len(mean), -1).astype(int), levels)
    element[:, -1], pooled[:, -1] = _errors(mean[:, None] - x)
    return RateDistortionTable(mean, std, rate, element, pooled)


def check_sensitivity(sensitivity: np.ndarray, channels: int) -> np.ndarray:
    weights = np.asarray(sensitivity, np.float64)
    if weights.shape != (2, channels) or not np.all(np.isfinite(weights)) or (weights < 0).any():
        raise ValueError(
            f"sensitivity must be (2, {channels}) finite non-negative weights (element-wise and "
            f"pooled), got shape {weights.shape}"
        )
    return weights


def allocate(x: np.ndarray, sensitivity: np.ndarray, bits: int, target_rate: float) -> Allocation:
    """Steps for features ``x`` (N, C, S) that meet ``target_rate`` bits/element (predicted)
    at the least predicted task distortion; ``sensitivity`` (2, C) as in the module text."""
    weights = check_sensitivity(sensitivity, x.shape[1])
    table = rate_distortion_table(x, bits)
    cost = table.distortion(weights)
    rows = np.arange(len(cost))

    def choose(lam: float) -> np.ndarray:
        return np.argmin(cost + lam * table.rate, axis=1)

    low, high = 1e-12, 1e12  # the rate falls as lambda grows
    for _ in range(_BISECTIONS):
        mid = np.sqrt(low * high)
        if table.rate[rows, choose(mid)].mean() > target_rate:
            low = mid
        else:
            high = mid
    choice = choose(high)  # the largest rate not above the target
    dropped = (choice == len(STEP_GRID)) | (table.std == 0)
    step = STEP_GRID[np.minimum(choice, len(STEP_GRID) - 1)] * np.where(
        table.std > 0, table.std, 1.0
    )
    lo, hi = ranges(table.mean, step, bits)
    return Allocation(
        lo=lo.astype(np.float32),
        hi=hi.astype(np.float32),
        dropped=dropped,
        rate=float(table.rate[rows, choice].mean()),
        distortion=float(cost[rows, choice].sum()),
    )
