"""Focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017) as a classification
loss in place of the cross-entropy.

The cross-entropy of each sample is scaled down by how well it is already classified:

    FL = mean_n  -(1 - p_{n,y_n})^gamma * log p_{n,y_n},    p = softmax(z),  gamma = 2

gamma = 0 is the cross-entropy. The term is the whole classification loss (terms [focal], no ``ce``).

This follows Self-KD-Lib (winycg/Self-KD-Lib ``methods/focal_loss.py``, used by ``main.py`` as its
classification loss for the focal row of the CIFAR-100 table): gamma 2, no alpha, batch mean, and the
modulating factor is not detached (its gradient flows, as in the paper). The paper's alpha-balancing
weight belongs to its binary, foreground/background detection setting; Self-KD-Lib uses none in the
multi-class case, and neither does this term. Here log p is a log-softmax (Self-KD-Lib takes the log
of the softmax probability, the same value but less accurate for tiny p), and 1 - p is computed as
-expm1(log p) and floored at the smallest positive float, so that a 0 < gamma < 1 never meets an
infinite slope at p = 1.

Mixed labels (Mixup, CutMix: ``target_probs`` q) give the label mixture of the focal losses,

    FL_q = mean_n sum_c q_{n,c} * -(1 - p_{n,c})^gamma * log p_{n,c},

which is FL for a one-hot q and, for q = lam * onehot(a) + (1 - lam) * onehot(b), lam * FL(a) + (1 -
lam) * FL(b): what Mixup's and CutMix's original code do with any criterion, and what the ``ce`` term
does with its cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.typed_config import EXPONENT, Options, option

from .base import LossTerm, StepOutput
from .registry import register_loss


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float) -> torch.Tensor:
    """Batch mean of -(1 - p_y)^gamma * log p_y, p = softmax(logits); ``targets`` are N class indices
    or an N x K label distribution q, which gives sum_c q_c * -(1 - p_c)^gamma * log p_c per sample."""
    log_probs = F.log_softmax(logits.float(), dim=1)
    if not targets.is_floating_point():  # hard labels: only the true class's entry is needed
        log_probs = log_probs.gather(1, targets.view(-1, 1)).squeeze(1)
    miss = (-torch.expm1(log_probs)).clamp_min(torch.finfo(log_probs.dtype).tiny)  # 1 - p
    losses = -miss.pow(gamma) * log_probs
    if targets.is_floating_point():
        losses = (targets.float() * losses).sum(dim=1)
    return losses.mean()


@dataclass
class FocalConfig(Options):
    gamma: float = option(2.0, "focusing parameter gamma (Self-KD-Lib and the paper: 2; 0 = cross-entropy)", **EXPONENT)


@register_loss("focal", FocalConfig)
class FocalLoss(LossTerm):
    def __init__(self, config: FocalConfig):
        super().__init__()
        self.config = config

    def forward(self, step: StepOutput):
        targets = step.labels
        return {"focal": focal_loss(step.logits, targets, self.config.gamma)}
