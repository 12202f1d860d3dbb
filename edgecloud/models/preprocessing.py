"""The preprocessing a model was trained with: resize, centre crop, normalise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np
import torch
from PIL import Image

_RESAMPLE = {
    "bicubic": Image.BICUBIC,
    "bilinear": Image.BILINEAR,
    "nearest": Image.NEAREST,
}


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side to ``resize``, centre-crop ``crop``, normalise with mean/std."""

    resize: int
    crop: int
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.interpolation not in _RESAMPLE:
            raise ValueError(f"unknown interpolation {self.interpolation!r}")
        if self.crop > self.resize:
            raise ValueError(f"crop {self.crop} is larger than resize {self.resize}")

    def crop_image(self, image: Image.Image) -> Image.Image:
        """Resized and centre-cropped RGB image, before normalisation."""
        image = image.convert("RGB")
        width, height = image.size
        scale = self.resize / min(width, height)
        size = (max(self.resize, round(width * scale)), max(self.resize, round(height * scale)))
        if size != image.size:
            image = image.resize(size, _RESAMPLE[self.interpolation])
        left = (size[0] - self.crop) // 2
        top = (size[1] - self.crop) // 2
        return image.crop((left, top, left + self.crop, top + self.crop))

    def normalize(self, pixels: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 RGB array -> normalised (3, H, W) float32 tensor."""
        array = pixels.astype(np.float32) / 255.0
        array = (array - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.normalize(np.asarray(self.crop_image(image)))


IMAGENET = Preprocessing(256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear")
# TensorFlow Lite convention (x*255 - 127) / 128, used by the EfficientNet-Lite checkpoints.
TFLITE = Preprocessing(256, 224, (127 / 255, 127 / 255, 127 / 255), (128 / 255,) * 3, "bicubic")
