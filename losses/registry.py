"""Loss-term registry: name -> (term class, config dataclass), filled by ``register_loss``."""
from __future__ import annotations

from typing import NamedTuple

from engine.errors import ConfigError

from .base import LossTerm


class RegisteredLoss(NamedTuple):
    term: type[LossTerm]
    config: type


LOSSES: dict[str, RegisteredLoss] = {}


def register_loss(name: str, config: type):
    def decorator(term: type[LossTerm]):
        if name in LOSSES:
            raise ValueError(f"loss term {name!r} is registered twice")
        LOSSES[name] = RegisteredLoss(term, config)
        return term

    return decorator


def build_loss_terms(names: list[str], loss_config) -> list[LossTerm]:
    """Build the active terms from ``loss.terms``; each reads its own section ``loss.<name>``."""
    unknown = [name for name in names if name not in LOSSES]
    if unknown:
        raise ConfigError(f"unknown loss term {unknown[0]!r} in loss.terms; known terms: {', '.join(sorted(LOSSES))}")
    if len(set(names)) != len(names):
        raise ConfigError(f"loss.terms lists a term twice: {names}")
    if not names:
        raise ConfigError("loss.terms is empty; list at least one term, e.g. [ce]")
    return [LOSSES[name].term(getattr(loss_config, name)) for name in names]
