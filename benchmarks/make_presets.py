"""Fit the codec calibration presets shipped in ``edgecloud/presets/``.

Each preset is fitted exactly as ``edgecloud sweep --calib-images 64`` fits its calibrations:
head features of the last 64 sorted images of the shared ImageNet samples (disjoint from the
sweep's evaluation images), same loader batch size, same metadata, so the ids and hashes equal
the sweep's on the same machine (another CPU's float rounding moves a step by ~1e-6, and the
id with it). Presets that exist are kept, so that edges and daemons holding them still agree;
only missing ones are fitted and presets no model record names are removed (``--refit``: fit
them all anew). Usage: ``.venv/bin/python benchmarks/make_presets.py [--data DIR] [--refit]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from edgecloud.codec import CodecCalibration, parse_spec
from edgecloud.datasets import make_loader
from edgecloud.experiments.sweep import SweepData
from edgecloud.models import load_model
from edgecloud.partition import split
from edgecloud.presets import PRESET_DIR, expected_presets

CALIB_IMAGES = 64
BATCH_SIZE = 32  # the sweep's default


def calibration_features(head: torch.nn.Module, data: SweepData) -> np.ndarray:
    """Head outputs (N, C, H, W) of the calibration images."""
    with torch.inference_mode():
        batches = [head(x).numpy() for x, _, _ in make_loader(data.calibration, BATCH_SIZE, 2)]
    return np.concatenate(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/imagenet-samples", help="image folder")
    parser.add_argument("--out", default=str(PRESET_DIR), help="output folder (the package's)")
    parser.add_argument("--refit", action="store_true", help="fit every preset anew")
    args = parser.parse_args()
    models = {name: load_model(name) for name, _, _ in expected_presets()}
    wanted = {  # (model, weights, cut, canonical spec) -> the spec as the record writes it
        (name, models[name].weights_id, cut, parse_spec(codec).canonical): codec
        for name, cut, codec in expected_presets()
    }
    kept = set()
    for path in Path(args.out).glob("*.npz"):
        cal = CodecCalibration.load(path)
        meta = cal.meta
        key = (meta.get("model"), meta.get("weights"), meta.get("cut"), cal.spec)
        if args.refit or key not in wanted:
            path.unlink()
        else:
            kept.add(key)
    for key, codec in wanted.items():
        model_name, _, cut, _ = key
        if key in kept:
            print(f"{model_name} {cut} {codec}: kept")
            continue
        model = models[model_name]
        data = SweepData.split(args.data, model, limit=None, calib_images=CALIB_IMAGES)
        files = data.calibration.files
        head, _ = split(model, cut)
        cal = CodecCalibration.fit(
            calibration_features(head, data),
            codec,
            model=model.name,
            weights=model.weights_id,
            cut=cut,
            calibration_files=f"{files[0].name}..{files[-1].name}",
        )
        path = cal.save(args.out)
        print(f"{model_name} {cut} {codec}: {path} (hash {cal.hash[:16]})")


if __name__ == "__main__":
    main()
