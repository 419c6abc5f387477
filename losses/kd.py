"""Logit knowledge distillation (Hinton et al., 2015): KL(softmax(t/T) || softmax(s/T)) * T^2.

The T^2 factor keeps the soft-target gradients at the scale of the cross-entropy's as T changes.
The CIFAR-100 KD protocol (configs/_base_/methods/kd.yaml) weights CE 0.1 and KD 0.9 with T = 4.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.typed_config import LOSS_WEIGHT, TEMPERATURE, Options, option

from .base import LossTerm, StepOutput
from .registry import register_loss


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Batch-mean KL divergence of the softened distributions, scaled by T^2; the teacher is detached."""
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


@dataclass
class KDConfig(Options):
    weight: float = option(
        0.9, "weight of the KD term (0.9 in the CIFAR KD protocol, with loss.ce.weight 0.1)", **LOSS_WEIGHT
    )
    temperature: float = option(4.0, "softmax temperature T", **TEMPERATURE)


@register_loss("kd", KDConfig)
class KnowledgeDistillation(LossTerm):
    requires_teacher = True

    def __init__(self, config: KDConfig):
        super().__init__()
        self.config = config

    def forward(self, step: StepOutput):
        if step.teacher_logits is None:  # the builder makes a teacher for every term that sets requires_teacher
            raise RuntimeError("the kd term got no teacher logits")
        return {"kd": self.config.weight * kd_loss(step.logits, step.teacher_logits, self.config.temperature)}
