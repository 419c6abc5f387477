"""The loader's batch, as it is: one forward pass of the B samples, nothing more for the terms."""

from __future__ import annotations

from typing import NamedTuple

from .base import BatchPlan, Composed
from .registry import register_plan


class Plain(NamedTuple):
    """A plain batch: the terms read the step's own logits, features and labels."""


@register_plan("plain")
class PlainPlan(BatchPlan):
    def compose(self, images, targets, indices) -> Composed:
        return Composed((images,), targets, indices, Plain())
