"""Model registry: ``load_model(name, weights=None) -> ModelSpec``."""

from __future__ import annotations

from edgecloud.models.preprocessing import Preprocessing
from edgecloud.models.registry import ModelSpec, describe_models, list_models, load_model

__all__ = ["ModelSpec", "Preprocessing", "describe_models", "list_models", "load_model"]
