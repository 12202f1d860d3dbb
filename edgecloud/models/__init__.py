"""Model registry: ``load_model(name, weights=None) -> ModelSpec``; one ``ModelRecord`` per
model (``@register_model``) with its default cut and recommended codecs.

Imported lazily: the records and constants (``edgecloud.models.record``) do not load torch.
"""

from __future__ import annotations

from edgecloud.lazy import lazy_exports

_EXPORTS = {
    "ModelRecord": "edgecloud.models.record",
    "list_models": "edgecloud.models.record",
    "model_record": "edgecloud.models.record",
    "register_model": "edgecloud.models.record",
    "Preprocessing": "edgecloud.models.preprocessing",
    "ModelSpec": "edgecloud.models.registry",
    "describe_models": "edgecloud.models.registry",
    "load_model": "edgecloud.models.registry",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
