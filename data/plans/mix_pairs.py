"""MixSKD's batches (Self-KD-Lib ``main_mixskd_cifar.py``): [x; x~], each clean image x and a mixup image
x~ = lam x + (1 - lam) x[perm], lam ~ Beta(alpha, alpha), forwarded in one pass as both of the authors'
scripts do (``torch.cat([inputs, mix_inputs])``: BatchNorm's statistics span clean and mixed images).

lam is drawn on the CPU from torch's global generator and perm is a device permutation, both from
generators every checkpoint saves, so a resumed run draws the same. The labels (and indices) of x~ are those
of x, as the hard labels of a Mixup batch; the training top-1 counts against them. ``train.batch_size``
counts the clean images: a step forwards twice as many. Mixup and CutMix (batch transforms) would mix
across [x; x~] and break its pairs: refused with this plan; Cutout gives x and x~ holes of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from core.typed_config import BETA_ALPHA, Options, option

from ..batch_transforms import beta_sample
from .base import BatchPlan, Composed
from .registry import register_plan


class MixPairs(NamedTuple):
    """The batch is [x; x~] of 2B rows, x~ = lam x + (1 - lam) x[permutation]: ``lam`` a 0-d float tensor
    (a tensor, so that a compiled step does not compile again for each lam), ``permutation`` B indices."""

    lam: torch.Tensor
    permutation: torch.Tensor


def interpolate(x: torch.Tensor, lam, permutation: torch.Tensor) -> torch.Tensor:
    """lam * x + (1 - lam) * x[perm]: mixup of a batch with its permutation (lam a float or 0-dim tensor)."""
    return lam * x + (1 - lam) * x[permutation]


@dataclass
class MixPairsOptions(Options):
    alpha: float = option(
        0.4, "lam ~ Beta(alpha, alpha) of the mixup images (MixSKD's CIFAR script: 0.4)", **BETA_ALPHA
    )


@register_plan("mix_pairs", MixPairsOptions)
class MixPairsPlan(BatchPlan):
    refuses_batch_transforms = ("mixup", "cutmix")

    def __init__(self, options: MixPairsOptions):
        super().__init__()
        self.alpha = options.alpha

    def compose(self, images, targets, indices) -> Composed:
        lam = beta_sample(self.alpha)
        permutation = torch.randperm(images.shape[0], device=images.device)
        indices = torch.cat([indices, indices]) if indices is not None else None
        mixed = torch.cat([images, interpolate(images, lam, permutation)])
        batch = MixPairs(images.new_full((), lam, dtype=torch.float32), permutation)
        return Composed((mixed,), torch.cat([targets, targets]), indices, batch)
