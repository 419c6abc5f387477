"""Teacher-free Feature Distillation (Tf-FD, Li, ECCV 2022), exactly as in docs METHOD.md.

``intra_fd``: within one stage, the salient half of the channels and the redundant half are pulled
together (mean squared error). ``inter_fd``: a shallow stage is pulled towards a deeper one, whose
feature is detached so the deep layer teaches and never learns from the shallow one.
Nothing here knows a model: channel counts and pooling sizes come from the tensors.

The training term computes the same numbers through ``losses/tffd_fused.py``, a faster path whose
values and gradients the tests hold equal to the readable functions below.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Optional

import torch
import torch.nn.functional as F

from engine.errors import ConfigError
from engine.typed_config import option

from .base import LossTerm, StepOutput
from .registry import register_loss
from .salience import channel_salience, salience_order  # noqa: F401  (re-exported: part of the method)
from .tffd_fused import FeaturePlan
from .tffd_taps import StageTaps


def intra_fd(feature: torch.Tensor, detach_salient: bool = False) -> torch.Tensor:
    """MSE between the salient half and the redundant half of the channels of one N x C x H x W feature.

    Channels are sorted by salience, descending; with h = floor(C/2) the first h are salient and the
    next h redundant (an odd C leaves out the least salient channel). Both halves get gradient unless
    ``detach_salient`` (then only the redundant half learns, "salient teaches redundant").
    """
    order = salience_order(feature)
    half = feature.shape[1] // 2
    salient = feature.index_select(1, order[:half])
    redundant = feature.index_select(1, order[half : 2 * half])
    if detach_salient:
        salient = salient.detach()
    return F.mse_loss(redundant, salient)


def inter_fd(shallow: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
    """MSE between the shallow feature, average-pooled to the deep one's size, and the detached deep
    feature, over their first min(C_shallow, C_deep) channels."""
    channels = min(shallow.shape[1], deep.shape[1])
    # Pooling is per channel, so cropping first gives the same numbers for less work.
    pooled = F.adaptive_avg_pool2d(shallow[:, :channels], deep.shape[-2:])
    return F.mse_loss(pooled, deep[:, :channels].detach())


def warmup_weight(epoch: int, warmup_epochs: int) -> float:
    """w(epoch) = min(1, epoch / warmup_epochs), epochs counted from 1; no warm-up when 0."""
    return 1.0 if warmup_epochs <= 0 else min(1.0, epoch / warmup_epochs)


@dataclass
class TfFDConfig:
    lambda_intra: float = option(4e-4, "weight of the intra-layer term (released-code default)")
    lambda_inter: float = option(5e-3, "weight of the inter-layer term (released-code default)")
    warmup_epochs: int = option(20, "the Tf-FD weight ramps linearly to 1 over this many epochs; 0 = none")
    stages: Optional[list[int]] = option(None, "stages used, counted from 1 (shallow) to K (deep); null = all")
    pairs: Optional[list[list[int]]] = option(
        None, "inter-layer (shallow, deep) stage pairs, counted from 1; null = all i < j among `stages`"
    )
    detach_salient: bool = option(False, "stop gradient into the salient half (the released code lets both learn)")

    def __post_init__(self):
        for name in ("lambda_intra", "lambda_inter"):
            if getattr(self, name) < 0:
                raise ConfigError(f"loss.tffd.{name} must be >= 0, got {getattr(self, name)}")
        if self.warmup_epochs < 0:
            raise ConfigError(f"loss.tffd.warmup_epochs must be >= 0, got {self.warmup_epochs}")
        for pair in self.pairs or []:
            if len(pair) != 2 or pair[0] >= pair[1]:
                raise ConfigError(f"loss.tffd.pairs entries must be [shallow, deep] with shallow < deep, got {pair}")


@register_loss("tffd", TfFDConfig)
class TeacherFreeFD(LossTerm):
    """lambda_inter * mean over pairs of inter_fd + lambda_intra * mean over stages of intra_fd,
    both scaled by the warm-up weight; returned as ``tffd_inter`` and ``tffd_intra``.
    Computed by ``feature_work`` (``losses/tffd_fused.py``): one call per stage feature that receives
    gradient, made by a tap as the stage finishes where the model lets the term tap its stages."""

    def __init__(self, config: TfFDConfig):
        super().__init__()
        self.config = config
        self.taps = StageTaps()

    def tap_stages(self, modules, feature_shapes) -> None:
        plans = {stage - 1: self._plan(stage, intra, deeper, feature_shapes)
                 for stage, intra, deeper in self._work(len(feature_shapes))}
        self.taps.remove()
        self.taps = StageTaps(modules, plans)

    def _stages(self, num_stages: int) -> list[int]:
        return self.config.stages if self.config.stages is not None else list(range(1, num_stages + 1))

    def _pairs(self, num_stages: int) -> list[list[int]]:
        if self.config.pairs is not None:
            return self.config.pairs
        return [list(pair) for pair in combinations(self._stages(num_stages), 2)]

    def check_features(self, num_stages: int) -> None:
        used = set(self._stages(num_stages)) | {s for pair in self._pairs(num_stages) for s in pair}
        bad = sorted(s for s in used if not 1 <= s <= num_stages)
        if bad:
            raise ConfigError(
                f"loss.tffd stages/pairs name stage {bad[0]}, but the model has stages 1..{num_stages}"
            )
        if not self._stages(num_stages):
            raise ConfigError("loss.tffd.stages is empty; use null for all stages")

    def _active(self, num_stages: int) -> tuple[list[int], list[tuple[int, int]]]:
        """The stages with an intra-layer loss and the pairs with an inter-layer one (none at lambda 0)."""
        stages = self._stages(num_stages) if self.config.lambda_intra > 0 else []
        pairs = [tuple(pair) for pair in self._pairs(num_stages)] if self.config.lambda_inter > 0 else []
        return stages, pairs

    def _work(self, num_stages: int) -> list[tuple[int, bool, list[int]]]:
        """(stage, whether it has an intra-layer loss, the deeper stages it is pulled towards) for each
        stage whose feature receives gradient."""
        stages, pairs = self._active(num_stages)
        return [(stage, stage in stages, [deep for shallow, deep in pairs if shallow == stage])
                for stage in sorted(set(stages) | {shallow for shallow, _ in pairs})]

    def _plan(self, stage: int, intra: bool, deeper: list[int], shapes) -> FeaturePlan:
        return FeaturePlan.of(shapes[stage - 1], intra, self.config.detach_salient, [shapes[d - 1] for d in deeper])

    def forward(self, step: StepOutput):
        feats, cfg = step.feats, self.config
        weight = warmup_weight(step.epoch, cfg.warmup_epochs)
        shapes = [feature.shape for feature in feats]
        stages, pairs = self._active(len(feats))
        intra, inter = {}, {}
        for stage, has_intra, deeper in self._work(len(feats)):
            plan = self._plan(stage, has_intra, deeper, shapes)
            targets = [feats[deep - 1] for deep in deeper]
            losses = list(plan.losses(self.taps.outputs(stage - 1, feats[stage - 1], plan), targets))
            if has_intra:
                intra[stage] = losses.pop(0)
            inter.update(((stage, deep), loss) for deep, loss in zip(deeper, losses))
        out = {}
        if pairs:
            out["tffd_inter"] = (weight * cfg.lambda_inter) * (sum(inter[pair] for pair in pairs) / len(pairs))
        if stages:
            out["tffd_intra"] = (weight * cfg.lambda_intra) * (sum(intra[stage] for stage in stages) / len(stages))
        return out
