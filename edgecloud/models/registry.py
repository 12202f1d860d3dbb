"""Model registry: architecture + weights + preprocessing + label names."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch

from edgecloud.errors import UnknownModelError, WeightsError
from edgecloud.models import efficientnet_lite
from edgecloud.models.labels import imagenet_labels
from edgecloud.models.preprocessing import IMAGENET, TFLITE, Preprocessing

RANDOM = "random"
WeightsArg = Union[str, Path, None]


@dataclass
class ModelSpec:
    """A ready-to-run classifier: module (eval mode, CPU), preprocessing and labels."""

    name: str
    module: torch.nn.Module
    preprocessing: Preprocessing
    labels: List[str]
    weights_id: str  # 16 hex digits of the sha256 of the state_dict
    weights_source: str = field(default="")

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        return (3, self.preprocessing.crop, self.preprocessing.crop)


@dataclass(frozen=True)
class _Entry:
    build: Callable[[], torch.nn.Module]
    preprocessing: Preprocessing
    description: str
    packaged_weights: Optional[Callable[[], Path]] = None


def _torchvision(name: str) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        import torchvision

        return torchvision.models.get_model(name, weights=None, num_classes=1000)

    return build


_REGISTRY: Dict[str, _Entry] = {
    "efficientnet_lite0": _Entry(
        efficientnet_lite.build,
        TFLITE,
        "EfficientNet-Lite0 (timm tf_efficientnet_lite0), packaged ImageNet weights",
        efficientnet_lite.packaged_weights_path,
    ),
    **{
        name: _Entry(_torchvision(name), IMAGENET, f"torchvision {name}, weights from --weights")
        for name in (
            "resnet18",
            "resnet50",
            "mobilenet_v2",
            "mobilenet_v3_large",
            "mobilenet_v3_small",
            "shufflenet_v2_x1_0",
            "vgg16",
            "densenet121",
        )
    },
}


def list_models() -> List[str]:
    """Names accepted by :func:`load_model`."""
    return sorted(_REGISTRY)


def describe_models() -> Dict[str, str]:
    return {name: _REGISTRY[name].description for name in list_models()}


def state_dict_hash(module: torch.nn.Module) -> str:
    """16 hex digits identifying the exact parameters and buffers of ``module``."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _read_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise WeightsError(f"cannot read weights file {path}: {exc}") from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(torch.is_tensor(v) for v in loaded.values()):
        raise WeightsError(f"{path} does not contain a state_dict of tensors")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in loaded.items()}


def _load_into(module: torch.nn.Module, state_dict: Dict[str, torch.Tensor], path: Path) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = [
        f"{k} {tuple(state_dict[k].shape)} != {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state_dict))
        if state_dict[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} with wrong shape (e.g. {'; '.join(wrong_shape[:3])})")
    if problems:
        raise WeightsError(
            f"weights file {path} does not fit the architecture: {'; '.join(problems)}"
        )
    module.load_state_dict(state_dict, strict=True)


def load_model(name: str, weights: WeightsArg = None) -> ModelSpec:
    """Build a registered model with its weights.

    ``weights`` is a state_dict file, ``"random"`` for a seeded random initialisation (for
    structural work only), or None for the model's packaged pretrained weights.
    """
    if name not in _REGISTRY:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    entry = _REGISTRY[name]
    if weights is None and entry.packaged_weights is None:
        raise WeightsError(
            f"model {name!r} has no packaged weights: pass a state_dict file with --weights PATH "
            f"(or --weights {RANDOM} for a random initialisation)"
        )
    if str(weights) == RANDOM:
        torch.manual_seed(0)
    module = entry.build()
    if str(weights) == RANDOM:
        source = RANDOM
    else:
        path = Path(weights) if weights is not None else entry.packaged_weights()
        state_dict = _read_state_dict(path)
        if name == "efficientnet_lite0" and efficientnet_lite.is_original_layout(state_dict):
            try:
                state_dict = efficientnet_lite.convert_state_dict(state_dict, module)
            except KeyError as exc:
                raise WeightsError(f"weights file {path}: {exc.args[0]}") from exc
        _load_into(module, state_dict, path)
        source = str(path)
    module.eval().requires_grad_(False)  # an inference runtime: no autograd bookkeeping
    return ModelSpec(
        name=name,
        module=module,
        preprocessing=entry.preprocessing,
        labels=imagenet_labels(),
        weights_id=state_dict_hash(module),
        weights_source=source,
    )


def weights_for_structure(name: str) -> Optional[str]:
    """Weights argument for work that needs only the structure (shapes, MACs): the packaged
    weights where the model has them, else a random initialisation."""
    if name not in _REGISTRY:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return None if _REGISTRY[name].packaged_weights is not None else RANDOM
