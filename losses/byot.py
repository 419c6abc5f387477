"""BYOT, be your own teacher (Zhang et al., ICCV 2019): auxiliary classifiers on the shallow stages,
taught by the deepest one.

Each shallow stage i gets a head (a bottleneck that brings its feature to the deepest stage's width
and resolution, a global average pool giving the feature f_i, and a classifier giving z_i); the
model's own output is (f_C, z_C), f_C the average-pooled deepest stage. The loss, as in the
luanyunteng/pytorch-be-your-own-teacher ``train.py`` (the authors published no ICCV code, and this
version is the one the paper's numbers are quoted from), is

    L = (1 - alpha) * sum_{i in heads + final} CE(z_i, y)
        + alpha * T^2 * sum_{i in heads} softCE(softmax(z_C / T) detached, z_i / T)
        + beta * sum_{i in heads} sum over (batch, channels) of (f_i - f_C detached)^2 * [f_i > 0 or f_C > 0]

with alpha = 0.1, T = 3, beta = 1e-6 (the feature term is a sum over the batch, not a mean, as theirs).
softCE(p, z) = mean over the batch of -sum_c p_c log softmax(z)_c; it differs from the KL divergence by
the teacher's entropy, which has no gradient. Their heads on a ResNet-18's stages 1-3 are
1x1 conv (C_i -> 128) - BN - ReLU, k x k conv with stride k (k = H_i / H_C) - BN - ReLU,
1x1 conv (128 -> C_C) - BN - ReLU, average pool, FC: here built from the stage shapes, so every backbone
gets them (convolutions without bias, as each is followed by BatchNorm; theirs has one on the first).
Self-KD-Lib's ``byot.py`` differs (two heads built of residual blocks, KD at T = 4, an MSE of 0.05 on
the 4x4 maps, CE unweighted); the authors' later journal code differs again (attention-gated heads).
Under Mixup or CutMix every CE is taken against the mixed labels; the distillation needs no label.

The heads are the term's parameters: the optimizer trains them with the model's, DDP reduces their
gradients, the checkpoint's ``"terms"`` keeps them for resuming; the exported and evaluated model is
the backbone alone. The term is the whole loss (its CE includes the model's own): list it without
``ce`` (``configs/_base_/methods/byot.yaml``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.errors import ConfigError, shown
from core.typed_config import LOSS_WEIGHT, STAGE, TEMPERATURE, Options, option

from .base import LossTerm, StepOutput, TrainingSetup
from .registry import register_loss


def soft_cross_entropy(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * mean over the batch of -sum_c softmax(teacher / T)_c * log softmax(logits / T)_c, teacher detached."""
    teacher = F.softmax(teacher_logits.detach().float() / temperature, dim=1)
    return temperature**2 * F.cross_entropy(logits.float() / temperature, teacher)


def feature_hint(feature: torch.Tensor, deepest: torch.Tensor) -> torch.Tensor:
    """Sum of (feature - deepest)^2 where either is positive; ``deepest`` (N x C, pooled) detached."""
    deepest = deepest.detach()
    mask = (feature > 0) | (deepest > 0)
    return ((feature.float() - deepest.float()) ** 2 * mask).sum()


def bottleneck_head(in_channels: int, out_channels: int, stride: int, width: int) -> nn.Sequential:
    """1x1 conv to ``width``, ``stride`` x ``stride`` conv with that stride, 1x1 conv to ``out_channels``
    (each followed by BN and ReLU), then a global average pool: N x C x H x W -> N x out_channels."""

    def conv_bn_relu(cin, cout, kernel):
        return [nn.Conv2d(cin, cout, kernel, stride=kernel, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    return nn.Sequential(
        *conv_bn_relu(in_channels, width, 1),
        *conv_bn_relu(width, width, stride),
        *conv_bn_relu(width, out_channels, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


@dataclass
class BYOTConfig(Options):
    alpha: float = option(0.1, "weight of the heads' distillation; the CE terms get 1 - alpha", min=0, max=1)
    temperature: float = option(3.0, "softmax temperature T of the heads' distillation", **TEMPERATURE)
    beta: float = option(1e-6, "weight of the feature hint (a sum over the batch)", **LOSS_WEIGHT)
    width: int = option(128, "channels inside each head's bottleneck", min=1, max=4096)
    stages: Optional[list[int]] = option(
        None, "stages that get a head, counted from 1; null = all but the deepest", **STAGE
    )


@register_loss("byot", BYOTConfig)
class BeYourOwnTeacher(LossTerm):
    def __init__(self, config: BYOTConfig):
        super().__init__()
        self.config = config
        self.stages: list[int] = []
        self.heads = nn.ModuleList()  # made by attach(), from the model's stage shapes
        self.classifiers = nn.ModuleList()

    def _stages(self, num_stages: int) -> list[int]:
        return self.config.stages if self.config.stages is not None else list(range(1, num_stages))

    def check_features(self, feature_shapes) -> None:
        num_stages, stages = len(feature_shapes), self._stages(len(feature_shapes))
        if not stages:
            raise ConfigError(
                "loss.byot needs at least one head: the model has one stage, or loss.byot.stages is "
                "empty (use null for every stage but the deepest)"
            )
        if len(set(stages)) != len(stages):
            raise ConfigError(f"loss.byot.stages lists a stage twice: {shown(stages)}")
        _, deep_h, deep_w = feature_shapes[-1]
        for stage in stages:
            if not 1 <= stage < num_stages:
                raise ConfigError(
                    f"loss.byot.stages names stage {stage}; heads go on stages 1..{num_stages - 1} "
                    f"(the deepest, {num_stages}, is the teacher)"
                )
            _, h, w = feature_shapes[stage - 1]
            if h % deep_h or w % deep_w or h // deep_h != w // deep_w:
                raise ConfigError(
                    f"loss.byot: stage {stage}'s {h}x{w} feature is not a square multiple of the deepest "
                    f"stage's {deep_h}x{deep_w}; leave it out of loss.byot.stages"
                )

    def attach(self, setup: TrainingSetup) -> None:
        deep_channels, deep_h, _ = setup.feature_shapes[-1]
        self.stages = self._stages(len(setup.feature_shapes))
        for stage in self.stages:
            channels, h, _ = setup.feature_shapes[stage - 1]
            self.heads.append(bottleneck_head(channels, deep_channels, h // deep_h, self.config.width))
            self.classifiers.append(nn.Linear(deep_channels, setup.num_classes))

    def forward(self, step: StepOutput):
        cfg = self.config
        targets = step.labels
        deepest = step.feats[-1].mean(dim=(2, 3))
        features = [head(step.feats[stage - 1]) for stage, head in zip(self.stages, self.heads)]
        logits = [classifier(feature) for classifier, feature in zip(self.classifiers, features)]
        ce = sum(F.cross_entropy(z.float(), targets) for z in [*logits, step.logits])
        kd = sum(soft_cross_entropy(z, step.logits, cfg.temperature) for z in logits)
        hint = sum(feature_hint(feature, deepest) for feature in features)
        return {"byot_ce": (1 - cfg.alpha) * ce, "byot_kd": cfg.alpha * kd, "byot_hint": cfg.beta * hint}
