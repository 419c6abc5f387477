"""CS-KD, class-wise self-knowledge distillation (Yun et al., CVPR 2020).

Each training sample (anchor) comes with another sample of its own class (its partner, drawn at random,
possibly the anchor itself under another augmentation: the ``class_pairs`` batch plan,
data/plans/class_pairs.py). The network's softened prediction on the partner teaches its prediction on
the anchor:

    L_cs = T^2 * KL(softmax(z_partner / T) || softmax(z_anchor / T)),  batch mean, z_partner detached

As in the authors' code (alinlab/cs-kd ``train.py``): the anchors are forwarded with gradient and the
partners in a second forward pass under ``torch.no_grad`` (the plan's, in train mode, so BatchNorm
normalises each pass with its own batch statistics); the total is CE on the anchors (the ``ce`` term) plus
lambda * L_cs with T = 4, lambda = 1 (3 on fine-grained datasets). ``train.batch_size`` counts the
anchors, as their ``batch_size`` does: each step forwards twice that many images.
The authors' protocol differs from Self-KD-Lib's (weight decay 1e-4, no Nesterov, /10 at 50% and
75%); ``configs/cifar100/selfkd/`` runs it under Self-KD-Lib's, whose ``cs_kd.py`` is the same loss.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.typed_config import LOSS_WEIGHT, TEMPERATURE, Options, option
from data.plans import ClassPairs

from .base import LossTerm, StepOutput
from .kd import kd_loss
from .registry import register_loss


@dataclass
class CSKDConfig(Options):
    weight: float = option(
        1.0, "lambda, the weight of the class-wise KD term (1; 3 on fine-grained datasets)", **LOSS_WEIGHT
    )
    temperature: float = option(4.0, "softmax temperature T", **TEMPERATURE)


@register_loss("cs_kd", CSKDConfig)
class ClassWiseKD(LossTerm):
    batch_plan = "class_pairs"

    def __init__(self, config: CSKDConfig):
        super().__init__()
        self.config = config

    def forward(self, step: StepOutput):
        pairs: ClassPairs = step.batch
        return {"cs_kd": self.config.weight * kd_loss(step.logits, pairs.partner_logits, self.config.temperature)}
