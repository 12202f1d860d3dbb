"""The codec calibrations a daemon decodes with (torch-free: decode workers load them too)."""

from __future__ import annotations

from typing import Any, Dict, Sequence


def load_calibrations(paths: Sequence[str], presets: bool) -> Dict[str, Any]:
    """The shipped presets (if ``presets``) plus the given files (codec calibrations or learned
    codecs; these win on equal ids)."""
    from edgecloud.codec import load_calibration_file
    from edgecloud.presets import preset_calibrations

    calibrations = dict(preset_calibrations()) if presets else {}
    for path in paths:
        calibration = load_calibration_file(path)
        calibrations[calibration.id] = calibration
    return calibrations
