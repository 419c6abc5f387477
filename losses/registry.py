"""Loss-term registry: name -> (term class, config dataclass), filled by ``register_loss``."""

from __future__ import annotations

from typing import NamedTuple

from core.errors import ConfigError, shown
from core.registry import Registry

from .base import LossTerm


class RegisteredLoss(NamedTuple):
    term: type[LossTerm]
    config: type


LOSSES = Registry("loss term")


def register_loss(name: str, config: type):
    """Register a ``LossTerm`` class under ``name``; ``loss.<name>`` is its config section."""
    return LOSSES.register(name, wrap=lambda term: RegisteredLoss(term, config))


def build_loss_terms(names: list[str], loss_config) -> list[LossTerm]:
    """Build the active terms from ``loss.terms``; each reads its own section ``loss.<name>``."""
    if not names:
        raise ConfigError("loss.terms is empty; list at least one term, e.g. [ce]")
    if len(set(names)) != len(names):
        raise ConfigError(f"loss.terms lists a term twice: {shown(names)}")
    return [LOSSES.lookup(name).term(getattr(loss_config, name)) for name in names]
