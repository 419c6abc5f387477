"""BAKE's batches (yxgeee/BAKE ``datasets.py`` ``IdentityBatchSampler``): each anchor with M other samples of
its class, the whole batch trained with gradient in one forward pass, as the authors' ``train.py`` does
(BatchNorm's statistics span anchors and partners). ``train.batch_size`` counts the anchors: a step
forwards (M + 1) x that many images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from core.typed_config import Options, option

from .base import BatchPlan, Composed
from .registry import register_plan

MAX_PARTNERS = 31  # a step forwards (M + 1) x train.batch_size images


class SameClass(NamedTuple):
    """The batch is B anchors, then B x M other samples of their classes (all first partners, then all second
    ones, ...), every row trained on alike."""

    partners: int


@dataclass
class SameClassOptions(Options):
    partners: int = option(
        3, "M, the other samples of its class that join each anchor in the batch (BAKE: 3)", min=1, max=MAX_PARTNERS
    )


def other_same_class(
    labels: torch.Tensor, anchors: torch.Tensor, count: int, generator: torch.Generator
) -> torch.Tensor:
    """For each anchor, ``count`` other samples of its class (len(anchors) x count): drawn uniformly
    without replacement from the class less the anchor; with replacement where the class has fewer than
    ``count`` other samples; the anchor itself where it is alone in its class."""
    by_class = torch.argsort(labels, stable=True)
    sizes = torch.bincount(labels)
    starts = torch.cumsum(sizes, 0) - sizes
    place = torch.empty_like(labels)  # each sample's position among the samples of its class
    place[by_class] = torch.arange(len(labels)) - starts[labels[by_class]]
    classes, own = labels[anchors], place[anchors]
    others = sizes[classes] - 1
    replace = others < count
    draws = torch.rand(len(anchors), count, generator=generator, dtype=torch.float64)
    taken = own.unsqueeze(1)  # positions in the class no later draw may take (without replacement)
    for column in range(count):
        pool = torch.where(replace, others, others - column).clamp_min(1)
        pick = (draws[:, column] * pool).long().clamp_max(pool - 1)  # the pick-th position still free:
        with_replacement = pick + (pick >= own)  # skip the anchor only
        for skipped in torch.sort(taken, dim=1).values.T:  # skip every taken position, in ascending order
            pick = pick + (pick >= skipped)
        pick = torch.where(replace, with_replacement, pick)
        taken = torch.cat([taken, pick.unsqueeze(1)], dim=1)
    positions = torch.where((others > 0).unsqueeze(1), taken[:, 1:], own.unsqueeze(1))
    return by_class[starts[classes].unsqueeze(1) + positions]


@register_plan("same_class", SameClassOptions)
class SameClassPlan(BatchPlan):
    def __init__(self, options: SameClassOptions):
        super().__init__()
        self.extra_samples = options.partners

    def draw_extra(self, labels, order, generator) -> torch.Tensor:
        return other_same_class(labels, order, self.extra_samples, generator)

    def compose(self, images, targets, indices) -> Composed:
        return Composed((images,), targets, indices, SameClass(self.extra_samples))
