"""Bootstrap intervals and McNemar's exact test of the sweep rows (no model needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgecloud.experiments.stats import (
    accuracy_intervals,
    bootstrap_ci,
    mcnemar_exact,
    mcnemar_p,
    paired_difference_ci,
)


def _hits(n: int, p: float, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random(n) < p


def test_bootstrap_interval_contains_the_mean_and_narrows_with_n():
    widths = []
    for n in (50, 200, 800):
        hits = _hits(n, 0.8)
        lo, hi = bootstrap_ci(hits)
        assert lo <= hits.mean() <= hi
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] == pytest.approx(4.0, rel=0.3)  # ~ 1 / sqrt(n)


def test_bootstrap_interval_matches_the_normal_approximation():
    hits = np.arange(400) % 2 == 0  # exactly 0.5
    lo, hi = bootstrap_ci(hits)
    half = 1.96 * math.sqrt(0.25 / 400)  # 0.049
    assert lo == pytest.approx(0.5 - half, abs=0.01) and hi == pytest.approx(0.5 + half, abs=0.01)


def test_bootstrap_is_reproducible_and_handles_degenerate_inputs():
    hits = _hits(300, 0.7)
    assert bootstrap_ci(hits) == bootstrap_ci(hits)  # fixed seed
    assert bootstrap_ci(hits, seed=1) != bootstrap_ci(hits)
    assert bootstrap_ci(np.ones(32)) == (1.0, 1.0)
    assert all(math.isnan(v) for v in bootstrap_ci(np.array([])))
    lo, hi = bootstrap_ci(hits, block=30)  # circular blocks (video frames)
    assert lo <= hits.mean() <= hi and hi - lo > 0


def test_paired_difference_is_narrower_than_the_accuracies():
    ref = _hits(500, 0.85)
    other = ref.copy()
    other[:10] = ~other[:10]  # a codec that changes 10 of 500 predictions
    lo, hi = paired_difference_ci(ref, other)
    drop = ref.mean() - other.mean()
    assert lo <= drop <= hi
    top1_lo, top1_hi = bootstrap_ci(other)
    assert hi - lo < (top1_hi - top1_lo) / 2  # the shared image difficulty cancels
    with pytest.raises(ValueError, match="unpaired"):
        paired_difference_ci(ref, other[:-1])


def test_mcnemar_exact_against_hand_computed_values():
    # b=10, c=2: 2 * P(X <= 2), X ~ Bin(12, 1/2) = 2 * (1 + 12 + 66) / 4096
    assert mcnemar_p(10, 2) == pytest.approx(2 * 79 / 4096) == pytest.approx(0.0386, abs=1e-4)
    assert mcnemar_p(2, 10) == mcnemar_p(10, 2)  # symmetric
    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(7, 7) == 1.0
    assert mcnemar_p(5, 0) == pytest.approx(2 / 32)
    assert 0.0 < mcnemar_p(3000, 3300) < 0.01  # large counts stay exact, no overflow


def test_mcnemar_counts_the_discordant_pairs():
    ref = np.array([1, 1, 1, 0, 0, 1], bool)
    other = np.array([1, 0, 0, 1, 0, 1], bool)
    assert mcnemar_exact(ref, other) == (pytest.approx(1.0), 2, 1)
    assert mcnemar_exact(ref, ref) == (1.0, 0, 0)


def test_accuracy_intervals_without_labels_are_nan_except_fidelity():
    empty = np.zeros(0, bool)
    ci = accuracy_intervals(empty, empty, _hits(40, 0.9), empty)
    assert ci["fidelity_lo"] <= ci["fidelity_hi"]
    for key in ("top1_lo", "top1_hi", "top1_drop_lo", "top5_hi", "mcnemar_p"):
        assert math.isnan(ci[key])
