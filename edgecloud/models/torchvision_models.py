"""torchvision architectures (weights from ``--weights``; nothing is downloaded)."""

from __future__ import annotations

from typing import Callable

import torch

from edgecloud.models.preprocessing import IMAGENET
from edgecloud.models.record import register_model

# name -> default cut: a small feature early enough to save edge compute
_DEFAULT_CUTS = {
    "resnet18": "layer2",
    "resnet50": "layer2",
    "mobilenet_v2": "features.7",
    "mobilenet_v3_large": "features.7",
    "mobilenet_v3_small": "features.4",
    "shufflenet_v2_x1_0": "stage3",
    "vgg16": "features",
    "densenet121": "features.transition2",
}


def _builder(name: str) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        import torchvision

        return torchvision.models.get_model(name, weights=None, num_classes=1000)

    return build


for _name, _cut in _DEFAULT_CUTS.items():
    register_model(
        _name,
        preprocessing=IMAGENET,
        description=f"torchvision {_name}, weights from --weights",
        default_cut=_cut,
    )(_builder(_name))
