"""Channel salience (METHOD.md, intra-layer step 1): which channels of a stage feature are salient."""
from __future__ import annotations

import torch

NORM_EPS = 1e-12  # as F.normalize: an all-zero map (a dead ReLU channel) has salience 0


@torch.no_grad()
def channel_salience(feature: torch.Tensor) -> torch.Tensor:
    """Mean over (N, H, W) of each (n, c) map normalised to unit L2 norm over (H, W); shape (C,).
    A normalised map sums to its sum over its norm: two reductions, no normalised copy."""
    feature = feature.detach().float()
    norms = torch.linalg.vector_norm(feature, dim=(2, 3)).clamp_min(NORM_EPS)
    return (feature.sum(dim=(2, 3)) / norms).mean(dim=0) / (feature.shape[2] * feature.shape[3])


def salience_order(feature: torch.Tensor) -> torch.Tensor:
    """Channel indices by descending salience; ties keep channel order."""
    check_intra_channels(feature.shape)
    return torch.argsort(channel_salience(feature), descending=True, stable=True)


def check_intra_channels(shape) -> None:
    """``shape``: a feature's N x C x H x W, or C x H x W."""
    if shape[-3] < 2:
        raise ValueError(f"intra_fd needs at least 2 channels, got a feature of shape {tuple(shape)}")
