"""Worked example (docs/ADDING_A_METHOD.md): class consistency, a paired-sample self-distillation method.

Each anchor comes with another sample of its class, and the two are forwarded together, with gradient, in
one pass. Each teaches the other its softened prediction (the other side detached, as CS-KD's partner):

    L = weight * T^2 * [KL(sg p_b^T || p_a^T) + KL(sg p_a^T || p_b^T)],  batch means over the B pairs

It needs a batch plan of its own, since CS-KD's (class_pairs) forwards the partners apart, without gradient:
``joint_class_pairs`` draws the same partners and keeps them in the batch. In a fork, the plan is a file in
data/plans/ and the term one in losses/, each imported by its package's ``__init__.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from core.typed_config import LOSS_WEIGHT, TEMPERATURE, Options, option
from data.plans import BatchPlan, Composed, register_plan
from data.plans.class_pairs import same_class_partner
from losses import LossTerm, StepOutput, register_loss
from losses.kd import kd_loss


# ---------------------------------------------------------------- the batch plan (rarely needed)
class JointClassPairs(NamedTuple):
    """The batch is B anchors, then their B partners (one each, of the anchor's class), all with gradient."""

    @staticmethod
    def halves(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A step output's rows of the anchors and of their partners."""
        half = rows.shape[0] // 2
        return rows[:half], rows[half:]


@register_plan("joint_class_pairs")
class JointClassPairsPlan(BatchPlan):
    extra_samples = 1  # the loaders add one partner per anchor, after the anchors

    def draw_extra(self, labels, order, generator) -> torch.Tensor:
        return same_class_partner(labels, order, generator).unsqueeze(1)

    def compose(self, images, targets, indices) -> Composed:
        return Composed((images,), targets, indices, JointClassPairs())  # one pass of anchors and partners


# ---------------------------------------------------------------- the loss: a pure function and a thin term
def class_consistency_loss(
    anchor_logits: torch.Tensor, partner_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T^2 KL(sg p_partner || p_anchor) + T^2 KL(sg p_anchor || p_partner) (``kd_loss`` detaches its teacher)."""
    return kd_loss(anchor_logits, partner_logits, temperature) + kd_loss(partner_logits, anchor_logits, temperature)


@dataclass
class ClassConsistencyConfig(Options):
    weight: float = option(1.0, "weight of the two-way distillation between same-class pairs", **LOSS_WEIGHT)
    temperature: float = option(4.0, "softmax temperature T", **TEMPERATURE)


@register_loss("class_consistency", ClassConsistencyConfig)
class ClassConsistency(LossTerm):
    batch_plan = "joint_class_pairs"

    def __init__(self, config: ClassConsistencyConfig):
        super().__init__()
        self.config = config

    def forward(self, step: StepOutput):
        anchors, partners = JointClassPairs.halves(step.logits.float())
        value = class_consistency_loss(anchors, partners, self.config.temperature)
        return {"class_consistency": self.config.weight * value}
