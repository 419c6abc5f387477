"""Teacher-free Feature Distillation (Tf-FD; Lujun Li, ECCV 2022), as specified in docs/METHOD.md.

``intra_fd``: within one stage, the salient half of the channels and the redundant half are pulled
together (mean squared error). ``inter_fd``: a shallow stage is pulled towards a deeper one, whose
feature is detached, so the deep layer teaches and never learns from the shallow one.
``TeacherFreeFD`` is the training term: it calls these two functions by their module-level names,
so the functions below are exactly what trains (edit or monkeypatch one and training changes), and
autograd makes every gradient. Nothing here knows a model: shapes come from the tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Optional

import torch
import torch.nn.functional as F

from core.errors import ConfigError, shown
from core.typed_config import LOSS_WEIGHT, STAGE, Options, option

from .base import LossTerm, StepOutput
from .registry import register_loss

NORM_EPS = 1e-12  # as F.normalize's: an all-zero map (a dead ReLU channel) has salience 0


@torch.no_grad()
def channel_salience(feature: torch.Tensor) -> torch.Tensor:
    """Per channel, the mean over (N, H, W) of each (n, c) map normalised to unit L2 norm over (H, W);
    shape (C,), no gradient. A normalised map's sum is its sum over its norm: two reductions, no copy."""
    feature = feature.detach().float()
    norms = torch.linalg.vector_norm(feature, dim=(2, 3)).clamp_min(NORM_EPS)
    return (feature.sum(dim=(2, 3)) / norms).mean(dim=0) / (feature.shape[2] * feature.shape[3])


def intra_fd(feature: torch.Tensor, detach_salient: bool = False) -> torch.Tensor:
    """MSE between the salient half and the redundant half of the channels of one N x C x H x W feature.

    Channels are sorted by salience, descending (ties keep channel order); with h = floor(C/2) the
    first h are salient and the next h redundant (an odd C leaves out the least salient channel).
    Both halves get gradient, as in the released code, unless ``detach_salient``.
    """
    if feature.shape[1] < 2:
        raise ValueError(f"intra_fd needs at least 2 channels, got a feature of shape {tuple(feature.shape)}")
    salient, redundant = salient_and_redundant(feature, salience_order(channel_salience(feature)))
    return F.mse_loss(redundant, salient.detach() if detach_salient else salient)


def salience_order(salience: torch.Tensor) -> torch.Tensor:
    """Channel indices by salience, descending; ties keep the lower channel index first."""
    return torch.argsort(salience, descending=True, stable=True)


def salient_and_redundant(feature: torch.Tensor, order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The halves ``intra_fd`` pairs: channels ``order[:h]`` (salient) and ``order[h:2h]`` (redundant),
    h = floor(C/2), each N x h x H x W; channel i of one half is paired with channel i of the other."""
    half = feature.shape[1] // 2
    # Both halves gathered in one copy: its backward is one scatter into the feature's gradient.
    salient, redundant = feature.index_select(1, order[: 2 * half]).unflatten(1, (2, half)).unbind(1)
    return salient, redundant


def inter_fd(shallow: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
    """MSE between the shallow feature, average-pooled to the deep one's size, and the detached deep
    feature, over their first min(C_shallow, C_deep) channels."""
    channels = min(shallow.shape[1], deep.shape[1])
    # Pooling is per channel, so cropping first gives the same numbers for less work.
    pooled = F.adaptive_avg_pool2d(shallow[:, :channels], deep.shape[-2:])
    return F.mse_loss(pooled, deep[:, :channels].detach())


def warmup_weight(epoch: torch.Tensor | int, warmup_epochs: int) -> torch.Tensor | float:
    """w(epoch) = min(1, epoch / warmup_epochs), epochs counted from 1; no warm-up when 0. ``epoch`` is the
    step's 0-d tensor (``StepOutput.epoch``): arithmetic on it, not on a Python number, keeps a compiled
    step from being specialised on the epoch."""
    if warmup_epochs <= 0:
        return 1.0
    return (torch.as_tensor(epoch, dtype=torch.float32) / warmup_epochs).clamp(max=1.0)


@dataclass
class TfFDConfig(Options):
    lambda_intra: float = option(4e-4, "weight of the intra-layer term (released-code default)", **LOSS_WEIGHT)
    lambda_inter: float = option(5e-3, "weight of the inter-layer term (released-code default)", **LOSS_WEIGHT)
    warmup_epochs: int = option(
        20, "the Tf-FD weight ramps linearly to 1 over this many epochs; 0 = none", min=0, max=100_000
    )
    stages: Optional[list[int]] = option(None, "stages used, counted from 1 (shallow) to K (deep); null = all", **STAGE)
    pairs: Optional[list[list[int]]] = option(
        None, "inter-layer [shallow, deep] stage pairs, counted from 1; null = all i < j among `stages`", **STAGE
    )
    detach_salient: bool = option(False, "stop gradient into the salient half (the released code lets both learn)")

    def __post_init__(self):
        super().__post_init__()
        if self.stages is not None and not self.stages:
            raise ConfigError("loss.tffd.stages is empty; use null for all stages")
        if self.pairs is not None and not self.pairs:
            raise ConfigError("loss.tffd.pairs is empty; use null for all pairs, or lambda_inter=0 for none")
        for pair in self.pairs or []:
            if len(pair) != 2 or pair[0] >= pair[1]:
                raise ConfigError(
                    f"loss.tffd.pairs entries must be [shallow, deep] with shallow < deep, got {shown(pair)}"
                )
        for key, items in (("stages", self.stages or []), ("pairs", self.pairs or [])):
            twice = next((item for index, item in enumerate(items) if item in items[:index]), None)
            if twice is not None:  # it would silently count twice in the mean
                raise ConfigError(f"loss.tffd.{key} lists {twice} twice: {shown(items)}")


@register_loss("tffd", TfFDConfig)
class TeacherFreeFD(LossTerm):
    """``tffd_inter`` = w * lambda_inter * mean over pairs of inter_fd, ``tffd_intra`` = w * lambda_intra *
    mean over stages of intra_fd, w the warm-up weight; a term whose lambda is 0 is not computed."""

    def __init__(self, config: TfFDConfig):
        super().__init__()
        self.config = config

    def _stages(self, num_stages: int) -> list[int]:
        return self.config.stages if self.config.stages is not None else list(range(1, num_stages + 1))

    def _pairs(self, num_stages: int) -> list[list[int]]:
        if self.config.pairs is not None:
            return self.config.pairs
        return [list(pair) for pair in combinations(self._stages(num_stages), 2)]

    def check_features(self, feature_shapes) -> None:
        num_stages = len(feature_shapes)
        used = set(self._stages(num_stages)) | {s for pair in self._pairs(num_stages) for s in pair}
        bad = sorted(s for s in used if not 1 <= s <= num_stages)
        if bad:
            raise ConfigError(f"loss.tffd stages/pairs name stage {bad[0]}, but the model has stages 1..{num_stages}")
        narrow = [s for s in self._stages(num_stages) if feature_shapes[s - 1][0] < 2]
        if narrow and self.config.lambda_intra > 0:
            raise ConfigError(
                f"loss.tffd: stage {narrow[0]} has {feature_shapes[narrow[0] - 1][0]} channel; intra_fd "
                f"needs at least 2 (leave it out of loss.tffd.stages or set lambda_intra=0)"
            )

    def forward(self, step: StepOutput):
        feats, cfg = step.feats, self.config
        weight = warmup_weight(step.epoch, cfg.warmup_epochs)
        out = {}
        if cfg.lambda_inter > 0:
            pairs = self._pairs(len(feats))
            inter = sum(inter_fd(feats[shallow - 1], feats[deep - 1]) for shallow, deep in pairs) / len(pairs)
            out["tffd_inter"] = (weight * cfg.lambda_inter) * inter
        if cfg.lambda_intra > 0:
            stages = self._stages(len(feats))
            intra = sum(intra_fd(feats[stage - 1], cfg.detach_salient) for stage in stages) / len(stages)
            out["tffd_intra"] = (weight * cfg.lambda_intra) * intra
        return out
