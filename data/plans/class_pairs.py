"""CS-KD's batches (alinlab/cs-kd ``PairBatchSampler``): each anchor with one random sample of its class.

The step trains on the anchors; the partners are forwarded after them, in a pass of their own under
``torch.no_grad`` (in train mode: BatchNorm normalises them with their own batch statistics and updates its
running statistics a second time), as the authors' ``train.py`` does. ``train.batch_size`` counts the
anchors, so each step forwards twice that many images. A batch transform (e.g. Cutout) runs on the
anchors only, the partners being set aside before it.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from .base import BatchPlan, Composed
from .registry import register_plan


class ClassPairs(NamedTuple):
    """The partners of a step's B anchors, one each, of the anchor's class (possibly the anchor itself
    under another augmentation), and the model's logits on them from their own pass, without gradient."""

    partner_images: torch.Tensor
    partner_logits: Optional[torch.Tensor] = None


def same_class_partner(labels: torch.Tensor, anchors: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """For each anchor, one index drawn uniformly from the samples of its class (itself included)."""
    by_class = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels)
    starts = torch.cumsum(counts, 0) - counts
    classes = labels[anchors]
    offsets = (torch.rand(len(anchors), generator=generator, dtype=torch.float64) * counts[classes]).long()
    return by_class[starts[classes] + offsets.clamp_max(counts[classes] - 1)]


@register_plan("class_pairs")
class ClassPairsPlan(BatchPlan):
    extra_samples = 1

    def draw_extra(self, labels, order, generator) -> torch.Tensor:
        return same_class_partner(labels, order, generator).unsqueeze(1)

    def compose(self, images, targets, indices) -> Composed:
        anchors = images.shape[0] // 2
        indices = indices[:anchors] if indices is not None else None
        return Composed((images[:anchors],), targets[:anchors], indices, ClassPairs(images[anchors:]))

    def complete(self, batch: ClassPairs, logits, model) -> ClassPairs:
        with torch.no_grad():
            partner_logits, _ = model(batch.partner_images)
        return ClassPairs(batch.partner_images, partner_logits)
