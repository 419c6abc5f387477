"""SAD, self-attention distillation (Hou et al., "Learning Lightweight Lane Detection CNNs by Self
Attention Distillation", ICCV 2019), as a classification regulariser.

Each stage's spatial attention map learns to look like the next deeper stage's:

    A(f) = softmax over the H*W positions of mean_c f_c^2                        (N x H x W)
    L_sad = sum_{i=1..S-1} mean_{n,h,w} (A(f_i) - A(up(sg f_{i+1})))^2

with f_1..f_S the model's stage outputs (shallow to deep), sg = detach (the deeper stage teaches and
never learns from this term) and up = bilinear resizing (align_corners=False) of the deeper *feature*
to the shallower one's H x W. The total is CE + weight * L_sad, weight 1000 (terms [ce, sad]).

This follows Self-KD-Lib (winycg/Self-KD-Lib ``methods/sad.py``, called from ``main.py``): the channel
mean (not sum) of the squared feature, the deeper feature detached and upsampled before its map is
taken, one squared-error mean per consecutive pair of stages, the pairs summed, weight 1000. Its
CIFAR model has four stages with strides 1/2/2/2, so each pair differs by exactly 2x and the code
upsamples by that fixed factor; resizing to the shallower map's size is the same there (and for any
exact 2x step) and also covers backbones whose consecutive stages differ by another factor or share
a resolution (resizing to the same size is the identity). The authors' lane-detection code was not
read (SELFKD.md section 7); their paper's attention generator (unverified here) aggregates the
channels first and upsamples the 2-D map, on lane networks with their own stage pairs and weights.
Self-KD-Lib's version is followed because the table row's published number (76.40, PreAct
ResNet-18) is its. Labels are not used, so mixed labels (Mixup, CutMix) change nothing here; the
``ce`` term beside it uses them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.errors import ConfigError
from core.typed_config import LOSS_WEIGHT, Options, option

from .base import LossTerm, StepOutput
from .registry import register_loss


def attention_map(feature: torch.Tensor) -> torch.Tensor:
    """A(f): the spatial softmax of the channel mean of f^2, for an N x C x H x W feature; N x H x W."""
    energy = feature.float().pow(2).mean(dim=1)
    return energy.flatten(1).softmax(dim=1).view_as(energy)


def sad_loss(feats: list[torch.Tensor]) -> torch.Tensor:
    """Sum over consecutive stages (i, i+1) of mean((A(f_i) - A(up(sg f_{i+1})))^2), the deeper feature
    detached and bilinearly resized (align_corners=False) to f_i's H x W before its map is taken."""
    if len(feats) < 2:
        raise ValueError(f"sad_loss needs at least 2 stage features, got {len(feats)}")
    total = feats[0].new_zeros((), dtype=torch.float32)
    for shallow, deep in zip(feats[:-1], feats[1:]):
        target = deep.detach().float()
        if target.shape[-2:] != shallow.shape[-2:]:
            target = F.interpolate(target, size=shallow.shape[-2:], mode="bilinear", align_corners=False)
        total = total + (attention_map(shallow) - attention_map(target)).pow(2).mean()
    return total


@dataclass
class SADConfig(Options):
    weight: float = option(1000.0, "weight of the summed attention-map losses (Self-KD-Lib: 1000)", **LOSS_WEIGHT)


@register_loss("sad", SADConfig)
class SelfAttentionDistillation(LossTerm):
    def __init__(self, config: SADConfig):
        super().__init__()
        self.config = config

    def check_features(self, feature_shapes) -> None:
        if len(feature_shapes) < 2:
            raise ConfigError(
                f"loss.sad distils each stage's attention map from the next stage's, but the model "
                f"has {len(feature_shapes)} stage feature(s); use a model with at least 2 stages"
            )

    def forward(self, step: StepOutput):
        return {"sad": self.config.weight * sad_loss(step.feats)}
