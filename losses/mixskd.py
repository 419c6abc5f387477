"""MixSKD, self-knowledge distillation from mixup (Yang et al., ECCV 2022): the network's predictions
and feature maps on a mixup image are matched with the same interpolation of its predictions and maps
on the two clean images.

Batch: the ``mix_pairs`` plan (data/plans/mix_pairs.py): [x; x~], x~ = lam x + (1 - lam) x[perm],
lam ~ Beta(alpha, alpha) (``batch.mix_pairs.alpha``), in one pass as both of the authors' scripts do.
Exits: a branch (``losses/branches.py``) from each stage in ``stages`` (default: every stage but the
deepest) rebuilds the later stages and ends in a map F_e of the deepest stage's shape and logits z_e;
the backbone's deepest map and logits are the last exit.
For any per-image quantity v, v_int = lam v(x) + (1 - lam) v(x)[perm] and v~ = v(x~). The self-teacher
h takes the channel concat of every exit's map, then a 1x1 conv to the deepest width (no BN, as in the
original), a global average pool and a linear classifier. With KD_T(s <- t) = T^2 KL_bm(sg p_t^T || p_s^T):

    L = sum_e CE(z_e(x), y)
        [+ sum_e mixCE(z~_e) + mixCE(h(F_int)) + mixCE(h(F~))]                         (``mixup_ce``)
        + kd_weight * (sum_{e aux} [KD_T(z_int_e <- z~_e) + KD_T(z~_e <- z_int_e)]
                       + KD_T(z_int_final <- h(F~)) + KD_T(z~_final <- h(F_int)))
        + feature_weight * sum_e MSE(F_int_e, F~_e)                                      (neither side detached)
        + adversarial_weight * sum_e BCE(D_e(GAP([F_int_e; F~_e])), [1, 0] for F_int, [0, 1] for F~)

mixCE(z) = lam CE(z, y) + (1 - lam) CE(z, y[perm]); D_e = Linear(C -> 128) - ReLU - Linear(128 -> 2), one
per exit; BCE with logits, a mean over the 2N x 2 outputs. T = 3, alpha = 0.4, every weight 1.

Original: the authors' code in Self-KD-Lib (winycg/Self-KD-Lib ``main_mixskd_cifar.py``,
``models/resnet_mixskd.py``, ``methods/adversarial.py``; ``main_mixskd_imagenet.py`` for ImageNet).
Its quirks, and what this term does:
- The mixup CE (``loss_mixcls``, the only loss that reaches h) is computed but not added to the loss in
  the CIFAR script; the ImageNet script adds it. Default ``mixup_ce: true``, as the ImageNet script and
  the paper, so the self-teacher learns. ``mixup_ce: false`` is the CIFAR script: h then gets no
  gradient, and PyTorch's SGD leaves a parameter without gradient alone (weight decay included), so
  h teaches from its random initialisation; here it is then frozen (no gradient, which also keeps DDP
  from waiting for one).
- The discriminators sit in a plain Python list, so no optimizer sees their parameters (nor does the
  checkpoint): they keep their random initialisation, and the BCE only trains the features, towards
  maps a random discriminator tells apart. There is no min-max in either script: nothing ascends the
  BCE. Default ``discriminator: frozen``, what both scripts do; ``trained`` lets the discriminators
  descend the same BCE (still no min-max).
- The original reports, each epoch, the best of its 4 exits' test accuracies. Here the evaluated and
  exported model is the backbone alone (its own exit); expect at most the published numbers.
- The CIFAR script trains with 64 clean images per step (128 forwarded) for 205 epochs; the configs
  here keep the shared Self-KD-Lib protocol of the comparison table (128 clean images, 200 epochs).
The branches rebuild each stage with ``blocks`` basic blocks (the original: as many as the backbone's
stage, 2 on ResNet-18). Terms with parameters (branches, h, discriminators) are trained by the one
optimizer, kept in the checkpoint's ``"terms"`` and never exported. The term is the whole loss: list
it without ``ce``.

Mixed labels from a batch transform: the plan composes the batch before the transforms run, so Cutout
(labels unchanged) works as usual; it refuses Mixup and CutMix. Called with mixed labels all the same (on
tensors, outside the trainer), the clean CE is taken against the label distributions of the clean
half, and the mixup CE against those distributions interpolated with lam and perm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.typed_config import LOSS_WEIGHT, STAGE, TEMPERATURE, Options, option
from data.plans import MixPairs, interpolate

from .base import LossTerm, StepOutput, TrainingSetup
from .branches import Branch, check_branches, rebuilt_stages
from .kd import kd_loss
from .registry import register_loss


def mixup_distillation(
    interpolated: Sequence[torch.Tensor],
    mixed: Sequence[torch.Tensor],
    teacher_of_interpolated: torch.Tensor,
    teacher_of_mixed: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """sum over the auxiliary exits (all but the last) of KD_T(z_int <- sg z~) + KD_T(z~ <- sg z_int),
    plus, for the last exit, KD_T(z_int <- sg h(F~)) + KD_T(z~ <- sg h(F_int)), where
    ``teacher_of_interpolated`` = h(F_int) and ``teacher_of_mixed`` = h(F~); KD_T as ``kd_loss``."""
    total = sum(
        kd_loss(z_int, z_mix, temperature) + kd_loss(z_mix, z_int, temperature)
        for z_int, z_mix in zip(interpolated[:-1], mixed[:-1])
    )
    return (
        total
        + kd_loss(interpolated[-1], teacher_of_mixed, temperature)
        + kd_loss(mixed[-1], teacher_of_interpolated, temperature)
    )


def feature_mse(interpolated: Sequence[torch.Tensor], mixed: Sequence[torch.Tensor]) -> torch.Tensor:
    """sum over the exits of the element mean of (F_int - F~)^2; neither side detached."""
    return sum(F.mse_loss(f_int.float(), f_mix.float()) for f_int, f_mix in zip(interpolated, mixed))


def discriminator_bce(
    discriminators: Sequence[nn.Module], interpolated: Sequence[torch.Tensor], mixed: Sequence[torch.Tensor]
) -> torch.Tensor:
    """sum over the exits of BCE-with-logits(D_e(GAP([F_int; F~])), one-hot of [0] * N + [1] * N): the
    discriminator's first output says "interpolated", its second "from the mixup image"."""
    total = 0
    for discriminator, f_int, f_mix in zip(discriminators, interpolated, mixed):
        pooled = F.adaptive_avg_pool2d(torch.cat([f_int, f_mix]), 1).flatten(1)
        source = (torch.arange(pooled.shape[0], device=pooled.device) >= f_int.shape[0]).long()
        total = total + F.binary_cross_entropy_with_logits(discriminator(pooled).float(), F.one_hot(source, 2).float())
    return total


@dataclass
class MixSKDConfig(Options):
    temperature: float = option(3.0, "softmax temperature T of every distillation", **TEMPERATURE)
    kd_weight: float = option(1.0, "weight of the distillation terms", **LOSS_WEIGHT)
    feature_weight: float = option(1.0, "weight of the feature MSE", **LOSS_WEIGHT)
    adversarial_weight: float = option(1.0, "weight of the discriminators' BCE", **LOSS_WEIGHT)
    mixup_ce: bool = option(
        True,
        "add the mixup images' CE (every exit and the self-teacher), as the ImageNet script "
        "and the paper; false: the CIFAR script, where the self-teacher never trains",
    )
    discriminator: str = option(
        "frozen",
        "frozen: the discriminators keep their random initialisation (both scripts); "
        "trained: they descend the same BCE",
        choices=("frozen", "trained"),
    )
    discriminator_width: int = option(128, "hidden width of each discriminator", min=1, max=4096)
    stages: Optional[list[int]] = option(
        None, "stages that get a branch, counted from 1; null = every stage but the deepest", **STAGE
    )
    blocks: int = option(
        2,
        "basic blocks per rebuilt stage in every branch (the original: the backbone's, 2 on ResNet-18)",
        min=1,
        max=16,
    )


@register_loss("mixskd", MixSKDConfig)
class MixupSelfKD(LossTerm):
    batch_plan = "mix_pairs"

    def __init__(self, config: MixSKDConfig):
        super().__init__()
        self.config = config
        self.stages: list[int] = []
        # made by attach(), from the model's stage shapes
        self.branches = nn.ModuleList()
        self.self_teacher = nn.Sequential()
        self.discriminators = nn.ModuleList()

    def _stages(self, num_stages: int) -> list[int]:
        return self.config.stages if self.config.stages is not None else list(range(1, num_stages))

    def check_features(self, feature_shapes) -> None:
        check_branches(feature_shapes, self._stages(len(feature_shapes)), "loss.mixskd")

    def attach(self, setup: TrainingSetup) -> None:
        cfg, shapes = self.config, setup.feature_shapes
        self.stages = self._stages(len(shapes))
        for stage in self.stages:
            blocks = [cfg.blocks] * len(rebuilt_stages(shapes, stage))
            self.branches.append(Branch(shapes, stage, blocks, setup.num_classes))
        deep = shapes[-1][0]
        widths = [branch.out_channels for branch in self.branches] + [deep]
        self.self_teacher = nn.Sequential(
            nn.Conv2d(sum(widths), deep, 1, bias=False),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(deep, setup.num_classes),
        )
        self.discriminators = nn.ModuleList(
            nn.Sequential(
                nn.Linear(width, cfg.discriminator_width), nn.ReLU(inplace=True), nn.Linear(cfg.discriminator_width, 2)
            )
            for width in widths
        )
        if cfg.discriminator == "frozen":
            self.discriminators.requires_grad_(False)
        if not cfg.mixup_ce:
            self.self_teacher.requires_grad_(False)

    def forward(self, step: StepOutput):
        cfg = self.config
        batch: MixPairs = step.batch
        lam, permutation = batch.lam, batch.permutation
        n = permutation.shape[0]  # clean images; the mixup images follow
        exits = [branch(step.feats[stage - 1]) for stage, branch in zip(self.stages, self.branches)]
        logits = [z.float() for z, _ in exits] + [step.logits.float()]
        maps = [feature for _, feature in exits] + [step.feats[-1]]
        if step.target_probs is None:
            labels = step.targets[:n]
            mixed_labels = interpolate(F.one_hot(labels, step.logits.shape[1]).float(), lam, permutation)
        else:
            labels = step.target_probs[:n]
            mixed_labels = interpolate(labels, lam, permutation)
        interpolated_logits = [interpolate(z[:n], lam, permutation) for z in logits]
        mixed_logits = [z[n:] for z in logits]
        interpolated_maps = [interpolate(f[:n], lam, permutation) for f in maps]
        mixed_maps = [f[n:] for f in maps]
        teacher_of_interpolated = self.self_teacher(torch.cat(interpolated_maps, 1)).float()
        teacher_of_mixed = self.self_teacher(torch.cat(mixed_maps, 1)).float()

        losses = {"mixskd_ce": sum(F.cross_entropy(z[:n], labels) for z in logits)}
        if cfg.mixup_ce:
            losses["mixskd_mix_ce"] = sum(
                F.cross_entropy(z, mixed_labels) for z in [*mixed_logits, teacher_of_interpolated, teacher_of_mixed]
            )
        losses["mixskd_kd"] = cfg.kd_weight * mixup_distillation(
            interpolated_logits, mixed_logits, teacher_of_interpolated, teacher_of_mixed, cfg.temperature
        )
        losses["mixskd_feature"] = cfg.feature_weight * feature_mse(interpolated_maps, mixed_maps)
        losses["mixskd_adversarial"] = cfg.adversarial_weight * discriminator_bce(
            self.discriminators, interpolated_maps, mixed_maps
        )
        return losses
