"""Two views of every sample: the sample is its own extra sample, so the batch holds a second, independently
augmented view of each of its B images, and both train with gradient in one forward pass (DDGSD, as
Self-KD-Lib's ``train_ddgsd.py`` forwards them). ``train.batch_size`` counts the samples: a step forwards
twice that many images.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .base import BatchPlan, Composed
from .registry import register_plan


class TwoViews(NamedTuple):
    """The batch is [view 1 of B samples; view 2 of the same B]: every output's first half of rows, then its
    second (``views``)."""

    @staticmethod
    def views(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A step output's rows of view 1 and of view 2."""
        half = rows.shape[0] // 2
        return rows[:half], rows[half:]


@register_plan("two_views")
class TwoViewsPlan(BatchPlan):
    extra_samples = 1

    def draw_extra(self, labels, order, generator) -> torch.Tensor:
        return order.unsqueeze(1)

    def compose(self, images, targets, indices) -> Composed:
        return Composed((images,), targets, indices, TwoViews())
