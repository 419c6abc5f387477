"""Batch plans: how a run's training steps make their batch (data/plans/base.py). Listed in the config as
``batch.plan`` (``auto``: the one the loss terms need), each with its options in ``batch.<plan>``."""

from . import class_pairs, last_batch, mix_pairs, plain, same_class, two_views  # noqa: F401  (register the plans)
from .base import BatchPlan, Composed
from .class_pairs import ClassPairs
from .last_batch import LastBatch
from .mix_pairs import MixPairs, interpolate
from .plain import Plain
from .registry import AUTO, PLANS, NoOptions, build_plan, choose_plan, plans_with_options, register_plan
from .same_class import SameClass
from .two_views import TwoViews

__all__ = [
    "AUTO",
    "PLANS",
    "BatchPlan",
    "ClassPairs",
    "Composed",
    "LastBatch",
    "MixPairs",
    "NoOptions",
    "Plain",
    "SameClass",
    "TwoViews",
    "build_plan",
    "choose_plan",
    "interpolate",
    "plans_with_options",
    "register_plan",
]
