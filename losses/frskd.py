"""FRSKD, feature refinement via self-knowledge distillation (Ji et al., CVPR 2021): a self-teacher
network refines the backbone's own stage features and teaches the backbone with them.

The self-teacher is a BiFPN over the backbone's stage features f_1..f_n (shallow to deep). It returns
refined maps g_1..g_n, each at its stage's resolution with ``width`` times its channels, and its own
logits z_bi from a classifier on the deepest refined map. The backbone (logits z) learns from it by
KD on the logits and by attention transfer on every stage; the self-teacher learns from the labels
only. The loss, as in the authors' code (MingiJi/FRSKD ``classification/utils.py`` ``train``,
``classification/distill_loss/AT.py``, ``distill_loss/KD.py``), is

    L = CE(z, y) + CE(z_bi, y) + alpha * KD_T(z <- sg z_bi) + beta * sum_i mean((a(f_i) - a(sg g_i))^2)

with KD_T(s <- t) = T^2 * batch mean of KL(softmax(t / T) || softmax(s / T)) (losses/kd.py ``kd_loss``),
a(f) = the spatial attention map mean_c(f^2), flattened per sample and L2-normalised, the mean taken
over batch x positions, and sg = detach. Defaults: alpha 2, beta 100, T 4 (their README's CIFAR-100
command), width 2, depth 2, one BiFPN layer (their ``main.py`` defaults). The term is the whole loss
(both CEs included): list it without ``ce`` (``configs/_base_/methods/frskd.yaml``), as ``byot``.
The backbone's features enter the self-teacher undetached, as theirs, so the self-teacher's CE also
trains the backbone; its logits and maps are detached only as the teachers of the KD and attention terms.

The self-teacher follows their ``BiFPNc`` (``models/bifpnc.py``, ``models/utils.py``), built here from the
stage shapes for any n >= 2 stages, each stage halving the previous one's height and width. With
C_i = width * c_i channels at stage i, x_i = ReLU(f_i), fuse(w; a, b, ...) = sum_j w'_j * input_j where
w' = ReLU(w) / (sum ReLU(w) + 1e-6) is the fast normalised fusion (one learnt weight vector per
node, initialised to ones):

- laterals: l_i = P_i(x_i) for the top-down path and t_i = Q_i(x_i) (i >= 2) for the bottom-up path, two
  separate 1x1 conv-BN-ReLU maps c_i -> C_i;
- top-down: p_n = l_n; p_i = S_i(fuse(l_i, U_i(ReLU p_{i+1}))) for i = n-1..1, with U_i a nearest x2
  upsampling followed by a 1x1 conv-BN-ReLU C_{i+1} -> C_i;
- bottom-up: g_1 = p_1; g_i = S'_i(fuse(t_i, ReLU p_i, D_i(ReLU g_{i-1}))) for 1 < i < n and
  g_n = S'_n(fuse(t_n, D_n(ReLU g_{n-1}))), with D_i a 3x3 stride-2 max-pool with TensorFlow-style
  "same" padding (one zero row and column at the bottom and right, harmless on non-negative maps),
  followed by a 1x1 conv-BN-ReLU C_{i-1} -> C_i;
- S, S' are ``depth`` depthwise-separable 3x3 convolutions (depthwise 3x3, pointwise 1x1, BN; a ReLU
  between repeats, none after the last); the refined maps are ReLU(g_i) and z_bi = FC(GAP(ReLU g_n)).

Convolutions have no bias; initialisation is PyTorch's default, as theirs. Their ``repeat`` (stacked
BiFPN layers) is fixed at 1 here: their default, and their later layers mis-size the bottom-up laterals
when ``width`` is not 1.

Features. Their ResNets apply ReLU at each block's input, so a block's output is pre-activation; in
the ``att`` mode their backbone returns ReLU(block output) and their BiFPN returns ReLU(g_i), so the
attention maps compare post-ReLU features. Here the stage features are the models' block outputs:
post-ReLU on post-activation ResNets (the same maps as theirs), the pre-activation sum on PreAct
ResNets (where, as theirs, the self-teacher's input is ReLU'd first, but the attention of f_i is not).

Self-KD-Lib (winycg/Self-KD-Lib ``methods/frskd.py``, ``models/bifpnc.py``) builds the same BiFPNc
(width 2, depth 2) for its CIFAR ResNet-18 and weights the terms alike (alpha 2, beta 100, T 4), but
differs in two ways: its ``DistillKL`` does not detach z_bi, so the KD term also pulls the self-teacher
towards the backbone; and it calls the BiFPN with ``preact=True``, so the attention compares the
pre-ReLU g_i with its PreAct backbone's block outputs (residual sums, not ReLU'd). We follow the
authors (teacher detached, post-ReLU refined maps): theirs is the method as published.

Under Mixup or CutMix both CEs are taken against the mixed labels (as the authors' ``mixed_criterion``
for both); the KD and attention terms need no label. The self-teacher is the term's parameters: the
optimizer trains it with the model, the checkpoint's ``"terms"`` keeps it, the exported and evaluated
model is the backbone alone. The authors' protocol (weight decay 1e-4, no Nesterov, /10 at 100 and 150,
200 epochs) differs from Self-KD-Lib's, which ``configs/cifar100/selfkd/`` runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.errors import ConfigError
from core.typed_config import LOSS_WEIGHT, TEMPERATURE, Options, option

from .base import LossTerm, StepOutput, TrainingSetup
from .kd import kd_loss
from .registry import register_loss

FUSION_EPS = 1e-6


# ---------------------------------------------------------------- the loss, as pure functions
def attention(feature: torch.Tensor) -> torch.Tensor:
    """a(f): mean over channels of f^2, flattened to N x (H*W) and L2-normalised per sample."""
    feature = feature.to(torch.promote_types(feature.dtype, torch.float32))  # half precision: in float32
    return F.normalize(feature.pow(2).mean(dim=1).flatten(1), dim=1)


def attention_loss(student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """sum over stages of mean over (batch, positions) of (a(student) - a(teacher))^2; teacher detached."""
    if len(student_feats) != len(teacher_feats):
        raise ValueError(f"attention_loss: {len(student_feats)} student maps but {len(teacher_feats)} teacher maps")
    return sum((attention(s) - attention(t.detach())).pow(2).mean() for s, t in zip(student_feats, teacher_feats))


def fusion_weights(raw: torch.Tensor, eps: float = FUSION_EPS) -> torch.Tensor:
    """Fast normalised fusion weights: ReLU(raw) / (sum ReLU(raw) + eps), non-negative, summing to ~1."""
    positive = F.relu(raw)
    return positive / (positive.sum() + eps)


def fuse(raw: torch.Tensor, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """sum_j w_j * inputs_j with w = fusion_weights(raw), one weight per input."""
    weights = fusion_weights(raw)
    return sum(weights[j] * x for j, x in enumerate(inputs))


def frskd_losses(
    logits: torch.Tensor,
    feats: Sequence[torch.Tensor],
    teacher_logits: torch.Tensor,
    teacher_feats: Sequence[torch.Tensor],
    targets: torch.Tensor,
    alpha: float,
    beta: float,
    temperature: float,
) -> dict[str, torch.Tensor]:
    """The four weighted parts of L: CE(z), CE(z_bi), alpha * KD_T(z <- sg z_bi), beta * attention_loss.
    ``targets`` are class indices or N x K label distributions (Mixup, CutMix)."""
    return {
        "frskd_ce": F.cross_entropy(logits.float(), targets),
        "frskd_ce_bifpn": F.cross_entropy(teacher_logits.float(), targets),
        "frskd_kd": alpha * kd_loss(logits.float(), teacher_logits.float(), temperature),
        "frskd_att": beta * attention_loss(feats, teacher_feats),
    }


# ---------------------------------------------------------------- the self-teacher (BiFPNc)
def pointwise(in_channels: int, out_channels: int) -> nn.Sequential:
    """1x1 conv - BN - ReLU."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU())


def separable_stack(channels: int, depth: int) -> nn.Sequential:
    """``depth`` x (depthwise 3x3 conv, pointwise 1x1 conv, BN), a ReLU before each but the first: ends in BN."""
    layers: list[nn.Module] = []
    for repeat in range(depth):
        if repeat:
            layers.append(nn.ReLU())
        layers += [
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        ]
    return nn.Sequential(*layers)


class Upsample2x(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="nearest")


class SamePadMaxPool(nn.Module):
    """3x3 stride-2 max-pool with "same" padding on an even-sized map: one zero row/column bottom and right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.pad(x, (0, 1, 0, 1)), kernel_size=3, stride=2)


class BiFPNSelfTeacher(nn.Module):
    """One BiFPN layer over stage features of ``channels`` (shallow to deep, each half the previous one's
    resolution) and a classifier on its deepest refined map: ``forward(feats) -> (refined maps, logits)``."""

    def __init__(self, channels: Sequence[int], num_classes: int, width: int = 2, depth: int = 2):
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"BiFPNSelfTeacher needs at least 2 stages, got {len(channels)}")
        wide = [c * width for c in channels]
        n = len(channels)
        self.lateral = nn.ModuleList(pointwise(c, w) for c, w in zip(channels, wide))
        self.lateral_bottom_up = nn.ModuleList(pointwise(c, w) for c, w in zip(channels[1:], wide[1:]))
        # top-down node i (i = 0..n-2) fuses lateral i with the upsampled node i+1
        self.up = nn.ModuleList(nn.Sequential(Upsample2x(), pointwise(wide[i + 1], wide[i])) for i in range(n - 1))
        self.top_down = nn.ModuleList(separable_stack(wide[i], depth) for i in range(n - 1))
        self.top_down_weights = nn.ParameterList(nn.Parameter(torch.ones(2)) for _ in range(n - 1))
        # bottom-up node i (i = 1..n-1) fuses its lateral, top-down node i (not for the deepest) and node i-1
        self.down = nn.ModuleList(nn.Sequential(SamePadMaxPool(), pointwise(wide[i - 1], wide[i])) for i in range(1, n))
        self.bottom_up = nn.ModuleList(separable_stack(wide[i], depth) for i in range(1, n))
        self.bottom_up_weights = nn.ParameterList(nn.Parameter(torch.ones(3 if i < n - 1 else 2)) for i in range(1, n))
        self.fc = nn.Linear(wide[-1], num_classes)

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        n = len(feats)
        inputs = [F.relu(f) for f in feats]
        lateral = [conv(x) for conv, x in zip(self.lateral, inputs)]
        lateral_bottom_up = [conv(x) for conv, x in zip(self.lateral_bottom_up, inputs[1:])]
        top_down = [None] * (n - 1) + [lateral[-1]]
        for i in range(n - 2, -1, -1):
            upsampled = self.up[i](F.relu(top_down[i + 1]))
            top_down[i] = self.top_down[i](fuse(self.top_down_weights[i], [lateral[i], upsampled]))
        refined = [top_down[0]]
        for i in range(1, n):
            across = [F.relu(top_down[i])] if i < n - 1 else []
            downsampled = self.down[i - 1](F.relu(refined[-1]))
            fused = fuse(self.bottom_up_weights[i - 1], [lateral_bottom_up[i - 1], *across, downsampled])
            refined.append(self.bottom_up[i - 1](fused))
        refined = [F.relu(g) for g in refined]
        return refined, self.fc(refined[-1].mean(dim=(2, 3)))


# ---------------------------------------------------------------- the term
@dataclass
class FRSKDConfig(Options):
    alpha: float = option(2.0, "weight of the KD from the self-teacher's logits", **LOSS_WEIGHT)
    beta: float = option(100.0, "weight of the attention transfer from the self-teacher's refined maps", **LOSS_WEIGHT)
    temperature: float = option(4.0, "softmax temperature T of the KD term", **TEMPERATURE)
    width: int = option(2, "the self-teacher's channels per stage, as a multiple of the stage's", min=1, max=16)
    depth: int = option(2, "depthwise-separable 3x3 convolutions in each BiFPN node", min=1, max=16)


@register_loss("frskd", FRSKDConfig)
class FeatureRefinementSelfKD(LossTerm):
    def __init__(self, config: FRSKDConfig):
        super().__init__()
        self.config = config
        self.teacher: BiFPNSelfTeacher | None = None  # made by attach(), from the model's stage shapes

    def check_features(self, feature_shapes) -> None:
        if len(feature_shapes) < 2:
            raise ConfigError(
                f"loss.frskd needs a model with at least 2 stage features to fuse; this one has {len(feature_shapes)}"
            )
        for stage, ((_, h, w), (_, h2, w2)) in enumerate(zip(feature_shapes, feature_shapes[1:]), start=1):
            if (h, w) != (2 * h2, 2 * w2):
                raise ConfigError(
                    f"loss.frskd: stage {stage + 1}'s {h2}x{w2} feature is not half of stage {stage}'s "
                    f"{h}x{w}, which the self-teacher's x2 resizing needs; use a model (or data.image_size) "
                    f"whose stages halve"
                )

    def attach(self, setup: TrainingSetup) -> None:
        self.teacher = BiFPNSelfTeacher(
            [c for c, _, _ in setup.feature_shapes], setup.num_classes, self.config.width, self.config.depth
        )

    def forward(self, step: StepOutput):
        if self.teacher is None:
            raise RuntimeError("the frskd term is not attached: call attach() with the model's feature shapes")
        cfg = self.config
        targets = step.labels
        refined, teacher_logits = self.teacher(step.feats)
        return frskd_losses(
            step.logits, step.feats, teacher_logits, refined, targets, cfg.alpha, cfg.beta, cfg.temperature
        )
