"""Model registry: ``load_model(name, weights=None) -> ModelSpec``; one ``ModelRecord`` per
model (``@register_model``) with its default cut and recommended codecs."""

from __future__ import annotations

from edgecloud.models.preprocessing import Preprocessing
from edgecloud.models.record import ModelRecord, list_models, model_record, register_model
from edgecloud.models.registry import ModelSpec, describe_models, load_model

__all__ = [
    "ModelRecord",
    "ModelSpec",
    "Preprocessing",
    "describe_models",
    "list_models",
    "load_model",
    "model_record",
    "register_model",
]
