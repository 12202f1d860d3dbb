"""Uncertainty of sweep accuracies: paired bootstrap intervals and McNemar's exact test.

Evaluation sets have a few hundred images, so one image moves an accuracy by 0.1-0.5 points.
Every interval here is a 95 % percentile bootstrap over *images* (pairs resampled jointly) with
a fixed seed, so a sweep's intervals are reproducible run to run.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

RESAMPLES = 2000
SEED = 0
LEVEL = 0.95


def bootstrap_ci(
    values: np.ndarray,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
    block: int = 1,
) -> Tuple[float, float]:
    """Percentile bootstrap interval of ``mean(values)`` over per-item values (e.g. 0/1 hits).

    ``block == 1`` resamples items with replacement; items with the same value are exchangeable,
    so this draws the count of each distinct value from a multinomial (the same distribution,
    without an (resamples, n) index array). ``block > 1`` is a circular block bootstrap for
    correlated items such as consecutive video frames. ``(nan, nan)`` for no items; the interval
    always contains the point estimate.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    if block <= 1:
        distinct, counts = np.unique(values, return_counts=True)
        means = rng.multinomial(n, counts / n, size=resamples) @ distinct / n
    else:
        block = min(block, n)
        starts = rng.integers(0, n, size=(resamples, -(-n // block)))
        index = (starts[:, :, None] + np.arange(block)) % n
        means = values[index.reshape(resamples, -1)[:, :n]].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    estimate = float(values.mean())
    return min(float(lo), estimate), max(float(hi), estimate)


def paired_difference_ci(
    reference: np.ndarray,
    other: np.ndarray,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
    block: int = 1,
) -> Tuple[float, float]:
    """Interval of ``mean(reference - other)`` (e.g. the top-1 drop), items resampled jointly."""
    reference, other = np.asarray(reference, np.float64), np.asarray(other, np.float64)
    if reference.shape != other.shape:
        raise ValueError(f"unpaired outcomes: {reference.shape} vs {other.shape}")
    return bootstrap_ci(reference - other, resamples, seed, level, block)


def mcnemar_exact(reference: np.ndarray, other: np.ndarray) -> Tuple[float, int, int]:
    """Two-sided exact McNemar test of paired 0/1 outcomes: ``(p, b, c)``.

    ``b``: items right in ``reference`` and wrong in ``other``; ``c``: the reverse. Under the
    null hypothesis (same accuracy) ``b ~ Binomial(b + c, 1/2)``; ``p`` is twice the smaller
    tail, capped at 1 (1 when ``b == c`` or there are no discordant pairs). Exact integer
    arithmetic, no normal approximation.
    """
    reference, other = np.asarray(reference, bool), np.asarray(other, bool)
    if reference.shape != other.shape:
        raise ValueError(f"unpaired outcomes: {reference.shape} vs {other.shape}")
    b = int(np.count_nonzero(reference & ~other))
    c = int(np.count_nonzero(~reference & other))
    return mcnemar_p(b, c), b, c


def mcnemar_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts ``b`` and ``c``."""
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    term, tail = 1, 1  # comb(n, 0); running sum of comb(n, 0..k)
    for i in range(1, k + 1):
        term = term * (n - i + 1) // i
        tail += term
    return min(1.0, 2 * tail / 2**n)  # int / int: one correctly rounded division


def accuracy_intervals(
    hits: np.ndarray, ref_hits: np.ndarray, agree: np.ndarray, hits5: np.ndarray
) -> Dict[str, float]:
    """Sweep-row intervals: top-1, top-1 drop (paired), fidelity, top-5 and McNemar's p.

    ``hits``/``ref_hits``/``hits5`` cover the labelled images (empty: all NaN), ``agree`` (top-1
    equal to the uncompressed model's) covers every image.
    """
    top1 = bootstrap_ci(hits)
    drop = paired_difference_ci(ref_hits, hits)
    fidelity = bootstrap_ci(agree)
    top5 = bootstrap_ci(hits5)
    p = mcnemar_exact(ref_hits, hits)[0] if len(hits) else float("nan")
    return {
        "top1_lo": top1[0],
        "top1_hi": top1[1],
        "top1_drop_lo": drop[0],
        "top1_drop_hi": drop[1],
        "fidelity_lo": fidelity[0],
        "fidelity_hi": fidelity[1],
        "top5_lo": top5[0],
        "top5_hi": top5[1],
        "mcnemar_p": p,
    }
