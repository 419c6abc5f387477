"""Batch transforms: Mixup, CutMix and Cutout, applied on the training device to a whole augmented,
normalised batch, before the forward pass. Listed in ``batch.transforms``, each with its options in
``batch.<name>``; they run in that order.

A transform returns the new images and the label distribution of each one, an N x K tensor (the
one-hot labels where it mixes none). What each loss term does with a mixed label distribution:
``ce`` takes the cross-entropy against it (for Mixup and CutMix exactly lam * CE(y_a) + (1 - lam) *
CE(y_b)); ``kd`` and ``tffd`` never read labels (the teacher and the features see the mixed images);
``tf_kd_reg`` mixes its virtual teachers in the same proportions; ``ps_kd`` puts the mixed labels in
place of the one-hot ones, (1 - alpha_t) * mixed + alpha_t * the image's past prediction; ``byot`` takes
every exit's cross-entropy against them; ``cs_kd`` and ``dlb`` distil predictions and read no label.
The hard labels (``targets``) stay
those of the unmixed images and are what the training top-1 is counted against.

Random draws use PyTorch's global generators (the CPU's for the mixing factors, the device's for
permutations and positions), whose states every checkpoint saves: a resumed run draws the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.errors import ConfigError, shown
from core.registry import Registry
from core.typed_config import BETA_ALPHA, Options, option

BATCH_TRANSFORMS = Registry("batch transform")  # name -> (transform class, config dataclass)


def register_batch_transform(name: str, config: type):
    return BATCH_TRANSFORMS.register(name, wrap=lambda transform: (transform, config))


def beta_sample(alpha: float) -> float:
    """lam ~ Beta(alpha, alpha), drawn on the CPU (no device synchronisation)."""
    return float(torch.distributions.Beta(alpha, alpha).sample())


def mix(images: torch.Tensor, labels: torch.Tensor, lam: float, permutation: torch.Tensor):
    """Mixup of a batch with its permutation: lam * x + (1 - lam) * x[perm], and the labels alike."""
    return (
        images.mul(lam).add_(images[permutation], alpha=1 - lam),
        labels.mul(lam).add_(labels[permutation], alpha=1 - lam),
    )


def cutmix_box(height: int, width: int, lam: float) -> tuple[int, int, int, int]:
    """CutMix's box (top, bottom, left, right): sides sqrt(1 - lam) * H and * W around a uniform
    centre, clipped to the image (so its area can be smaller than 1 - lam)."""
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    centre_y, centre_x = int(torch.randint(0, height, ())), int(torch.randint(0, width, ()))
    top, bottom = max(centre_y - cut_h // 2, 0), min(centre_y + cut_h // 2, height)
    left, right = max(centre_x - cut_w // 2, 0), min(centre_x + cut_w // 2, width)
    return top, bottom, left, right


def cutout_masks(count: int, height: int, width: int, length: int, device) -> torch.Tensor:
    """count x 1 x H x W: 0 inside one length x length hole per image, 1 elsewhere; each hole's centre
    is uniform over the image and the hole is clipped at the border."""
    centre_y = torch.randint(0, height, (count, 1, 1), device=device)
    centre_x = torch.randint(0, width, (count, 1, 1), device=device)
    rows = torch.arange(height, device=device).view(1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, width)
    inside = (
        (rows >= centre_y - length // 2)
        & (rows < centre_y + length // 2)
        & (cols >= centre_x - length // 2)
        & (cols < centre_x + length // 2)
    )
    return (~inside).unsqueeze(1).to(torch.float32)


@dataclass
class MixupConfig(Options):
    alpha: float = option(
        1.0, "lam ~ Beta(alpha, alpha) (1.0: facebookresearch/mixup-cifar10; Self-KD-Lib 0.4)", **BETA_ALPHA
    )


@register_batch_transform("mixup", MixupConfig)
class Mixup:
    """Zhang et al., ICLR 2018, as facebookresearch/mixup-cifar10: one lam per batch, mixed with a
    random permutation of the batch."""

    def __init__(self, config: MixupConfig):
        self.config = config

    def __call__(self, images: torch.Tensor, labels: torch.Tensor):
        lam = beta_sample(self.config.alpha)
        return mix(images, labels, lam, torch.randperm(images.shape[0], device=images.device))


@dataclass
class CutMixConfig(Options):
    alpha: float = option(1.0, "lam ~ Beta(alpha, alpha)", **BETA_ALPHA)
    prob: float = option(
        0.5,
        "probability that a batch is cut-mixed (0.5: clovaai/CutMix-PyTorch's CIFAR "
        "setting; 1.0 there on ImageNet and in Self-KD-Lib)",
        min=0,
        max=1,
    )


@register_batch_transform("cutmix", CutMixConfig)
class CutMix:
    """Yun et al., ICCV 2019, as clovaai/CutMix-PyTorch: with probability ``prob`` a batch gets a box
    of a permuted copy pasted in, and lam is recomputed from the box's area."""

    def __init__(self, config: CutMixConfig):
        self.config = config

    def __call__(self, images: torch.Tensor, labels: torch.Tensor):
        if float(torch.rand(())) >= self.config.prob:
            return images, labels
        permutation = torch.randperm(images.shape[0], device=images.device)
        height, width = images.shape[-2:]
        top, bottom, left, right = cutmix_box(height, width, beta_sample(self.config.alpha))
        images = images.clone()
        images[:, :, top:bottom, left:right] = images[permutation, :, top:bottom, left:right]
        lam = 1.0 - (bottom - top) * (right - left) / (height * width)
        return images, labels.mul(lam).add_(labels[permutation], alpha=1 - lam)


@dataclass
class CutoutConfig(Options):
    length: int = option(
        8, "side of the square hole in pixels (uoguelph-mlrg/Cutout: 8 on CIFAR-100, 16 on CIFAR-10)", min=1, max=4096
    )


@register_batch_transform("cutout", CutoutConfig)
class Cutout:
    """DeVries and Taylor, 2017, as uoguelph-mlrg/Cutout: one hole per image, zero after
    normalisation; the labels are unchanged."""

    def __init__(self, config: CutoutConfig):
        self.config = config

    def __call__(self, images: torch.Tensor, labels: torch.Tensor):
        count, _, height, width = images.shape
        return images * cutout_masks(count, height, width, self.config.length, images.device).to(images.dtype), labels


def build_batch_transforms(names: list[str], batch_config) -> list:
    """The transforms of ``batch.transforms``, in order, each built from its section ``batch.<name>``."""
    if len(set(names)) != len(names):
        raise ConfigError(f"batch.transforms lists a transform twice: {shown(names)}")
    return [BATCH_TRANSFORMS.lookup(name)[0](getattr(batch_config, name)) for name in names]


def apply_batch_transforms(transforms: list, images: torch.Tensor, targets: torch.Tensor, num_classes: int):
    """The transformed images and their label distributions (N x K), from the one-hot labels."""
    labels = F.one_hot(targets, num_classes).to(torch.float32)
    for transform in transforms:
        images, labels = transform(images, labels)
    return images, labels
