"""The Tf-FD loss as the released training loop computes it, transcribed literally, for reference.

Source: lliai/Teacher-free-Distillation, ``train_kd.py`` at HEAD (docs/METHOD.md, "Released-code
variants"). The released code hard-codes ResNet-20's pooling kernels (2, 4) and channel slices
(16, 32); here they come from the shapes, so the same operations run on any model. Everything else is
as released: the salience from a normalised copy of the feature, a full channel-permuted copy for
the intra-layer loss, pooling over every channel before the slice, sums divided by the counts.

Not a training path: ``tests/test_tffd.py`` holds ``losses/tffd.py`` equal to it, and
``scripts/benchmark.py`` times it beside the training term (row ``tffd_released``).
"""

from __future__ import annotations

from itertools import combinations

import torch
import torch.nn.functional as F

from losses import LossTerm, StepOutput
from losses.tffd import TfFDConfig, warmup_weight


def released_intra_fd(feature: torch.Tensor) -> torch.Tensor:
    """Sort the channels by the mean of the L2-normalised maps, MSE of the first half and the second.
    As released, it needs an even channel count (an odd one gives halves of different widths)."""
    channels = feature.shape[1]
    if channels % 2:
        raise ValueError(f"the released intra-layer loss needs an even channel count, got {channels}")
    order = torch.sort(F.normalize(feature, p=2, dim=(2, 3)).mean([0, 2, 3]), dim=0, descending=True).indices
    permuted = torch.index_select(feature, 1, order)
    return F.mse_loss(permuted[:, 0 : channels // 2], permuted[:, channels // 2 : channels])


def released_inter_fd(shallow: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
    """avg_pool2d of the shallow feature by the size ratio, then the first min(C) channels of both."""
    channels = min(shallow.shape[1], deep.shape[1])
    pooled = F.avg_pool2d(shallow, shallow.shape[2] // deep.shape[2])
    return F.mse_loss(pooled[:, 0:channels], deep[:, 0:channels].detach())


def released_tffd(feats: list[torch.Tensor], lambda_intra: float, lambda_inter: float, weight: float) -> torch.Tensor:
    """w * (lambda_inter * mean over all pairs i < j + lambda_intra * mean over all stages)."""
    pairs = list(combinations(range(len(feats)), 2))
    inter = sum(released_inter_fd(feats[i], feats[j]) for i, j in pairs) / len(pairs)
    intra = sum(released_intra_fd(feature) for feature in feats) / len(feats)
    return weight * (lambda_inter * inter + lambda_intra * intra)


class ReleasedTfFD(LossTerm):
    """The transcription as a loss term (all stages, all pairs), returning ``tffd_released``."""

    def __init__(self, config: TfFDConfig):
        super().__init__()
        self.config = config

    def forward(self, step: StepOutput):
        cfg = self.config
        weight = warmup_weight(step.epoch, cfg.warmup_epochs)
        return {"tffd_released": released_tffd(step.feats, cfg.lambda_intra, cfg.lambda_inter, weight)}
