"""Codec calibration presets shipped with the package.

Each ``*.npz`` here is a :class:`~edgecloud.codec.CodecCalibration` fitted by
``benchmarks/make_presets.py`` on the features of the last 64 sorted images of the shared
ImageNet samples (disjoint from the images the sweep evaluates on). The cloud daemon loads
them all; the edge picks the one matching its model, weights, cut and codec spec.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Dict, Optional, Tuple

from edgecloud.codec import CodecCalibration, load_calibrations, parse_spec

PRESET_DIR = Path(__file__).resolve().parent


def expected_presets() -> Tuple[Tuple[str, str, str], ...]:
    """(model, cut, codec spec) of every preset make_presets.py fits: the calibrated codecs
    the model records recommend, and their coarse codecs for resending unsure answers
    (imports the model definitions)."""
    from edgecloud.models.record import all_records

    return tuple(
        (record.name, cut, codec)
        for record in all_records()
        for table in (record.codecs, record.refine_codecs)
        for cut, codec in table.items()
        if parse_spec(codec).needs_calibration
    )


@lru_cache(maxsize=1)
def preset_calibrations() -> Dict[str, CodecCalibration]:
    """Every shipped preset, keyed by calibration id (hashes checked on load)."""
    return load_calibrations(PRESET_DIR)


def find_preset(model: str, weights_id: str, cut: str, spec: str) -> Optional[CodecCalibration]:
    """The preset fitted for this model, weights, cut and codec spec, or None."""
    canonical = parse_spec(spec).canonical
    for cal in preset_calibrations().values():
        meta = cal.meta
        if (
            cal.spec == canonical
            and meta.get("model") == model
            and meta.get("weights") == weights_id
            and meta.get("cut") == cut
        ):
            return cal
    return None
