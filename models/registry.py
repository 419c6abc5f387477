"""Model registry: ``register_model`` fills it, ``build_model`` reads it; ``timm/<architecture>`` names
build timm's models (models/timm_backbone.py)."""

from __future__ import annotations

import torch.nn as nn

from core.registry import Registry

from .timm_backbone import build_timm_model, is_timm_name

MODELS = Registry("model")
register_model = MODELS.register


def build_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build a registered model, or ``timm/<architecture>``, whose ``forward(x)`` returns
    ``(logits, stage_features)``."""
    if is_timm_name(name):
        return build_timm_model(name, num_classes, **kwargs)
    return MODELS.lookup(name)(num_classes=num_classes, **kwargs)


def build_configured_model(model_config, num_classes: int) -> nn.Module:
    """The model a config's ``model`` section describes (its timm options for a timm model)."""
    options = {}
    if is_timm_name(model_config.name):
        options = {"timm_kwargs": model_config.timm_kwargs, "timm_stages": model_config.timm_stages}
    return build_model(model_config.name, num_classes, **options)
