"""USKD, universal self-knowledge distillation with customized soft labels (Yang et al., ICCV 2023, "From
Knowledge Distillation to Self-Knowledge Distillation: A Unified Approach with Normalized Loss and
Customized Soft Labels").

The network makes its own soft labels, separately for the target class and the non-target classes, and
is trained on them beside the ordinary cross-entropy (the ``ce`` term):

    s = softmax(z),   w = softmax(z_weak),   z_weak = Linear(GAP(feature of an earlier stage))

    target:      p_t = sg(s_y^2 + 1 - mean_batch(s_y^2))            L_t = -mean_n p_t * log s_y
    weak head:   q   = 0.9 * onehot(y) + 0.1 / K                    L_w = mu * mean_n sum_c -q_c log w_c
    non-target:  score_c = w_c / (1 - w_y) + l_c / (1 - l_y),  l = log softmax(z)   (no gradient)
                 the class at descending rank r of score gets 1 / r; y is dropped, the rest renormalised
                 to nz (no gradient);  L_n = -mean_n sum_{c != y} nz_c * log softmax_{c != y}(z)_c

    L_uskd = alpha * L_t + beta * L_n + L_w

This follows the authors' code, yzd-v/cls_KD ``mmcls/models/dis_losses/uskd.py`` (the loss) and
``mmcls/models/classifiers/distiller.py`` (which feeds it the neck-pooled output of the backbone's
second-deepest stage, ``fea_s[-2]``; the weak head is 256 -> K on a ResNet-18, not detached, so L_w trains
the backbone's earlier stages too). Self-KD-Lib has no USKD. What the code does, and where it departs from
the paper:

- ``rank_from``: in the code the final-logit part of the rank score reads a variable that by then holds
  the log-softmax of z, not its softmax, so the score adds probabilities of the weak head to
  log-probabilities of the final layer, each divided by one minus its value at the labels. The paper's
  abstract says the non-target soft labels come from the rank of the intermediate feature (the weak head).
  ``code`` (the default) reproduces the released code, whose numbers are published; ``paper`` ranks by
  the weak head's probabilities alone. Either way the ranks carry no gradient (only their order is used).
- Ranks are by a stable descending sort (ties keep the lower class index first); the code's sort is not
  stable, which matters only for exactly tied scores.
- Mixed labels (``step.target_probs`` from Mixup / CutMix), as the code does with a score vector: the two
  most probable classes of each mixed label stand in for y (a stable sort, so where only one class has
  mass the second is the lowest-indexed zero class). Each gets p_t = sg(s_c^2 + v_c - mean_batch(s_c^2))
  with v_c its label mass (p_t = 0 where v_c = 0) and L_t sums over the two; both are left out of the
  non-target part, and the rank score divides by one minus their summed w and l. The weak head's target
  is 0.9 * the whole mixed label + 0.1 / K. (cls_KD's USKD configs themselves use no batch mixing.)
- mean_batch is over the batch of one process: the code's runs per GPU (16 images on CIFAR-100, 32 on
  ImageNet, with 8 GPUs), so a run with larger per-process batches averages over more samples.
- The weak head's stage is an option (``stage``, counted from the deepest, -1; default -2, the
  second-deepest, the code's ``fea_s[-2]``); its input width comes from the model's stage shapes, so
  every backbone with two stages or more gets one. mmcls counts MobileNetV2's 1280-channel 1x1 conv as a
  stage, so the code's ``fea_s[-2]`` there (mv2_sd_img.py, channel 320) is the deepest stage, -1, of
  ``mobilenetv2_imagenet``, whose stages end before that conv (configs/imagenet/mobilenetv2_uskd.yaml).

Defaults are the CIFAR-100 settings (``configs/distillers/cifar100/res18_sd_cifar.py``): alpha 0.1,
beta 0.1, mu 0.1. ImageNet (``configs/distillers/imagenet/res18_sd_img.py``): alpha 1, beta 0.1, mu 0.005.
The weak head is the term's parameter: trained with the model, saved in the checkpoint's ``"terms"``,
left out of the exported model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.errors import ConfigError
from core.typed_config import LOSS_WEIGHT, Options, option

from .base import LossTerm, StepOutput, TrainingSetup
from .registry import register_loss
from .zipf_ls import non_target_columns

EPS = 1e-6  # keeps the rank score's denominators away from zero, as in the authors' code


def label_classes(targets: torch.Tensor, target_probs: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The classes that count as "the target" of each sample and their label mass, both N x m: the hard
    label with mass 1 (m = 1), or the two most probable classes of a mixed label (m = 2)."""
    if target_probs is None:
        return targets[:, None], torch.ones(targets.shape[0], 1, device=targets.device)
    values, classes = torch.sort(target_probs.float(), dim=1, descending=True, stable=True)
    return classes[:, :2], values[:, :2]


def target_loss(logits: torch.Tensor, classes: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """L_t = -mean_n sum_m p_t * log s_c, with s = softmax(logits), s_c its value at ``classes`` (N x m) and
    p_t = s_c^2 + values - mean over the batch of s_c^2 (0 where values is 0), detached."""
    log_probs = F.log_softmax(logits.float(), dim=1).gather(1, classes)
    with torch.no_grad():
        squared = log_probs.exp() ** 2
        soft_target = torch.where(values > 0, squared + values - squared.mean(dim=0, keepdim=True), 0.0)
    return -(soft_target * log_probs).sum(dim=1).mean()


def weak_loss(weak_logits: torch.Tensor, label_probs: torch.Tensor) -> torch.Tensor:
    """mean_n sum_c -q_c log softmax(weak_logits)_c with q = 0.9 * label_probs + 0.1 / K (label smoothing
    of 0.1 over all K classes, the label keeping 0.9 + 0.1 / K)."""
    num_classes = weak_logits.shape[1]
    return F.cross_entropy(weak_logits.float(), 0.9 * label_probs.float() + 0.1 / num_classes)


def rank_scores(logits: torch.Tensor, weak_logits: torch.Tensor, classes: torch.Tensor, rank_from: str) -> torch.Tensor:
    """The N x K score whose descending order ranks the classes (no gradient). ``code``: w / (1 - w_y) +
    l / (1 - l_y), w = softmax(weak_logits), l = log softmax(logits), each ``_y`` summed over ``classes``;
    ``paper``: w / (1 - w_y) alone."""
    with torch.no_grad():
        weak = F.softmax(weak_logits.float(), dim=1)
        score = weak / (1 - weak.gather(1, classes).sum(dim=1, keepdim=True) + EPS)
        if rank_from == "code":
            log_probs = F.log_softmax(logits.float(), dim=1)
            score = score + log_probs / (1 - log_probs.gather(1, classes).sum(dim=1, keepdim=True) + EPS)
        return score


def zipf_weights(scores: torch.Tensor) -> torch.Tensor:
    """1 / r for the class at descending rank r (1 = the highest score) of each row; no gradient."""
    with torch.no_grad():
        order = torch.argsort(scores, dim=1, descending=True, stable=True)  # the class at each rank
        ranks = torch.argsort(order, dim=1)  # the rank (from 0) of each class
        return 1.0 / (ranks + 1).to(torch.float32)


def non_target_loss(logits: torch.Tensor, classes: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """L_n = -mean_n sum_{c not in classes} nz_c log softmax_{c not in classes}(logits)_c, nz = the
    non-target ``weights`` renormalised to sum 1 (detached)."""
    log_probs = F.log_softmax(non_target_columns(logits.float(), classes), dim=1)
    soft = non_target_columns(weights.detach().float(), classes)
    soft = soft / soft.sum(dim=1, keepdim=True)
    return -(soft * log_probs).sum(dim=1).mean()


class USKDParts(NamedTuple):
    target: torch.Tensor  # alpha * L_t
    non_target: torch.Tensor  # beta * L_n
    weak: torch.Tensor  # mu * the weak head's soft CE


def uskd_loss(
    logits: torch.Tensor,
    weak_logits: torch.Tensor,
    targets: torch.Tensor,
    target_probs: Optional[torch.Tensor],
    alpha: float,
    beta: float,
    mu: float,
    rank_from: str = "code",
) -> USKDParts:
    """The three weighted parts of L_uskd = alpha * L_t + beta * L_n + mu * softCE(weak); their sum is
    the loss. ``target_probs``: the N x K mixed labels, or None for the hard ``targets``."""
    classes, values = label_classes(targets, target_probs)
    label_probs = target_probs if target_probs is not None else F.one_hot(targets, logits.shape[1])
    weights = zipf_weights(rank_scores(logits, weak_logits, classes, rank_from))
    return USKDParts(
        alpha * target_loss(logits, classes, values),
        beta * non_target_loss(logits, classes, weights),
        mu * weak_loss(weak_logits, label_probs),
    )


@dataclass
class USKDConfig(Options):
    alpha: float = option(0.1, "weight of the target part L_t (CIFAR-100 0.1, ImageNet 1)", **LOSS_WEIGHT)
    beta: float = option(0.1, "weight of the non-target part L_n (0.1 on both)", **LOSS_WEIGHT)
    mu: float = option(
        0.1, "weight of the weak head's label-smoothed CE (CIFAR-100 0.1, ImageNet 0.005)", **LOSS_WEIGHT
    )
    stage: int = option(
        -2,
        "the stage whose average-pooled output feeds the weak head, counted from the deepest "
        "(-1): -2, the one before it, as in the authors' code; -1 where a head block follows "
        "the deepest stage, as mobilenetv2_imagenet's 1280-channel conv",
        min=-16,
        max=-1,
    )
    rank_from: str = option(
        "code",
        "what ranks the non-target classes: code (the released code's weak-head "
        "probabilities + final log-probabilities) or paper (the weak head alone)",
        choices=("code", "paper"),
    )


@register_loss("uskd", USKDConfig)
class UniversalSelfKD(LossTerm):
    def __init__(self, config: USKDConfig):
        super().__init__()
        self.config = config
        self.stage_index = 0  # into the model's stage features, set by attach()
        self.weak_head: Optional[nn.Linear] = None  # made by attach(), from the stage's width

    def _stage_index(self, num_stages: int) -> int:
        stage = self.config.stage
        if num_stages < 2:
            raise ConfigError(
                "loss.uskd needs a stage before the deepest for its weak head, and the model has one "
                "stage; use another model or drop uskd from loss.terms"
            )
        if stage < -num_stages:
            raise ConfigError(
                f"loss.uskd.stage={stage} is beyond the shallowest of this model's {num_stages} stages; "
                f"use -{num_stages}..-1 (default -2)"
            )
        return num_stages + stage

    def check_features(self, feature_shapes) -> None:
        self._stage_index(len(feature_shapes))

    def attach(self, setup: TrainingSetup) -> None:
        self.stage_index = self._stage_index(len(setup.feature_shapes))
        channels = setup.feature_shapes[self.stage_index][0]
        self.weak_head = nn.Linear(channels, setup.num_classes)

    def forward(self, step: StepOutput):
        cfg = self.config
        weak_logits = self.weak_head(step.feats[self.stage_index].mean(dim=(2, 3)))
        parts = uskd_loss(
            step.logits, weak_logits, step.targets, step.target_probs, cfg.alpha, cfg.beta, cfg.mu, cfg.rank_from
        )
        return {"uskd_target": parts.target, "uskd_non_target": parts.non_target, "uskd_weak": parts.weak}
