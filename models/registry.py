"""Model registry: ``register_model`` fills it, ``build_model`` reads it."""
from __future__ import annotations

import torch.nn as nn

from core.registry import Registry

MODELS = Registry("model")
register_model = MODELS.register


def build_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build a registered model whose ``forward(x)`` returns ``(logits, stage_features)``."""
    return MODELS.lookup(name)(num_classes=num_classes, **kwargs)
