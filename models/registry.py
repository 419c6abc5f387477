"""Model registry: a plain dict filled by the ``register_model`` decorator."""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from engine.errors import ConfigError

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    def decorator(factory: Callable[..., nn.Module]):
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        MODELS[name] = factory
        return factory

    return decorator


def build_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build a registered model whose ``forward(x)`` returns ``(logits, stage_features)``."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    return MODELS[name](num_classes=num_classes, **kwargs)
