"""Model registry: architecture + weights + preprocessing + label names."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import torch

from edgecloud.errors import WeightsError
from edgecloud.models import efficientnet_lite, torchvision_models  # noqa: F401 - registration
from edgecloud.models.labels import imagenet_labels
from edgecloud.models.preprocessing import Preprocessing
from edgecloud.models.record import ModelRecord, all_records, model_record

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
    record: Optional[ModelRecord] = field(default=None, repr=False, compare=False)

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        return (3, self.preprocessing.crop, self.preprocessing.crop)


def describe_models() -> Dict[str, str]:
    return {record.name: record.description for record in all_records()}


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
    entry = model_record(name)
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
        record=entry,
    )


def weights_for_structure(name: str) -> Optional[str]:
    """Weights argument for work that needs only the structure (shapes, MACs): the packaged
    weights where the model has them, else a random initialisation."""
    return None if model_record(name).packaged_weights is not None else RANDOM
