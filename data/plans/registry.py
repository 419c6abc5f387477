"""Batch-plan registry: name -> (plan class, options dataclass), filled by ``register_plan``; and the one
rule that picks a run's plan from what its loss terms need."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from core.errors import ConfigError
from core.registry import Registry
from core.typed_config import Options

from .base import BatchPlan

AUTO = "auto"  # batch.plan's default: the plan the loss terms need, or plain


@dataclass
class NoOptions(Options):
    """The options of a plan that has none (it gets no ``batch.<name>`` section)."""


class RegisteredPlan(NamedTuple):
    plan: type[BatchPlan]
    options: type


PLANS = Registry("batch plan")


def register_plan(name: str, options: type = NoOptions):
    """Register a ``BatchPlan`` class under ``name``; ``batch.<name>`` holds its options (if it has any)."""
    return PLANS.register(name, wrap=lambda plan: RegisteredPlan(plan, options))


def plans_with_options() -> dict[str, type]:
    """name -> options dataclass, for the plans that have options: the config's ``batch.<name>`` sections."""
    return {
        name: registered.options for name, registered in sorted(PLANS.items()) if registered.options is not NoOptions
    }


def choose_plan(requested: str, needs: dict[str, str]) -> str:
    """The run's plan: ``requested`` (``batch.plan``), or with ``auto`` the one the loss terms need (``needs``:
    term -> plan, for the terms that need one), else plain. A run has one plan, so terms that need different
    ones, or a plan other than the requested one, are a ``ConfigError``."""
    wanted = sorted(set(needs.values()))
    if requested == AUTO:
        if len(wanted) > 1:
            listed = ", ".join(f"loss.{term} needs {plan}" for term, plan in needs.items())
            raise ConfigError(
                f"loss.terms need different batch plans ({listed}); a run has one plan: combine terms "
                f"that need the same plan, or one that needs none"
            )
        return wanted[0] if wanted else "plain"
    PLANS.lookup(requested)
    clash = next((term for term, plan in needs.items() if plan != requested), None)
    if clash is not None:
        raise ConfigError(
            f"batch.plan={requested}, but loss.{clash} needs batch plan {needs[clash]}; set "
            f"batch.plan={needs[clash]} (or auto), or drop {clash} from loss.terms"
        )
    return requested


def build_plan(name: str, batch_config) -> BatchPlan:
    """The plan ``name``, with its options from ``batch_config.<name>`` where it has a section."""
    registered = PLANS.lookup(name)
    options = getattr(batch_config, name) if registered.options is not NoOptions else registered.options()
    return registered.plan(options)
