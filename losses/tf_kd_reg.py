"""Tf-KD_reg, teacher-free KD with a manually designed "virtual teacher" (Yuan et al., CVPR 2020).

The virtual teacher puts ``correct_prob`` on the true class and shares the rest evenly, u_y = 0.99,
u_k = 0.01 / (K - 1), softened at a high temperature: q = softmax(u / T), nearly uniform at T = 20.
The student, at T = 1, is pulled towards it: L_reg = KL(q || softmax(z)), batch mean.

This follows the authors' code (yuanli2333/Teacher-free-Knowledge-Distillation, ``my_loss_function.py``
``loss_kd_regularization``): L = (1 - alpha) CE + alpha * m * KLDivLoss(mean over N*K elements). With
their CIFAR-100 ResNet-18 setting alpha 0.1, m 100, K 100 that is 0.9 CE + 0.1 KL_batchmean, which is
what ``configs/_base_/methods/tf_kd_reg.yaml`` sets (``loss.ce.weight`` 0.9, ``loss.tf_kd_reg.weight``
0.1 = alpha * m / K). Self-KD-Lib's ``tf_kd_reg.py`` is another loss (a label-smoothed target at
T = 20, divided by T, no T^2), not followed here.

With mixed labels (Mixup, CutMix) the virtual teacher is mixed in the same proportions: q = P @ Q,
P the label distributions, Q the virtual teacher of each class.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.typed_config import LOSS_WEIGHT, TEMPERATURE, Options, option

from .base import LossTerm, StepOutput, TrainingSetup
from .registry import register_loss


def virtual_teachers(num_classes: int, correct_prob: float, temperature: float) -> torch.Tensor:
    """K x K: row y is softmax(u / T) with u_y = correct_prob and u_k = (1 - correct_prob) / (K - 1)."""
    scores = torch.full((num_classes, num_classes), (1.0 - correct_prob) / (num_classes - 1))
    scores.fill_diagonal_(correct_prob)
    return F.softmax(scores / temperature, dim=1)


def tf_kd_reg_loss(logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """KL(q || softmax(logits)), batch mean; ``teacher_probs`` (q) carries no gradient."""
    return F.kl_div(F.log_softmax(logits.float(), dim=1), teacher_probs, reduction="batchmean")


@dataclass
class TfKDRegConfig(Options):
    weight: float = option(
        0.1,
        "weight of KL_batchmean(q || p) (the authors' alpha * m / K: 0.1 for "
        "CIFAR-100 ResNet-18, with loss.ce.weight 1 - alpha = 0.9)",
        **LOSS_WEIGHT,
    )
    temperature: float = option(
        20.0, "temperature T of the virtual teacher (20 for CIFAR-100 ResNet-18)", **TEMPERATURE
    )
    correct_prob: float = option(0.99, "the virtual teacher's score for the true class, before softening", min=0, max=1)


@register_loss("tf_kd_reg", TfKDRegConfig)
class TfKDRegularization(LossTerm):
    def __init__(self, config: TfKDRegConfig):
        super().__init__()
        self.config = config
        # K x K, made by attach(); a buffer, so that it moves with the network, but not saved (it follows
        # from the config)
        self.register_buffer("teachers", torch.zeros(0, 0), persistent=False)

    def attach(self, setup: TrainingSetup) -> None:
        self.teachers = virtual_teachers(setup.num_classes, self.config.correct_prob, self.config.temperature)

    def forward(self, step: StepOutput):
        if step.target_probs is None:
            teacher_probs = self.teachers[step.targets]
        else:
            teacher_probs = step.target_probs @ self.teachers
        return {"tf_kd_reg": self.config.weight * tf_kd_reg_loss(step.logits, teacher_probs)}
