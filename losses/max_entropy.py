"""Confidence penalty (Pereyra et al., "Regularizing Neural Networks by Penalizing Confident Output
Distributions", ICLR workshop 2017), the "maximum entropy" regulariser.

Low-entropy (over-confident) predictions are penalised by subtracting the predictive entropy:

    L = CE - beta * H,   H = mean_n  -sum_c p_{n,c} log p_{n,c},   p = softmax(z)

This term returns -beta * H (terms [ce, max_entropy]); the gradient flows through p, nothing is
detached. The paper's hinged and annealed variants are not implemented.

This follows Self-KD-Lib (winycg/Self-KD-Lib ``main.py``, method ``Maximum_entropy``, its CIFAR-100
table row). Its variable named ``entropy`` is in fact sum p log p = -H (the sign is right: adding
0.5 times it rewards entropy), but it is averaged over all N * K elements rather than per sample, so
its 0.5 is beta = 0.5 / K on the batch-mean entropy used here: 0.005 at K = 100, the default and the
setting of ``configs/_base_/methods/max_entropy.yaml`` (for another K, Self-KD-Lib's setting is
0.5 / K). The paper's own beta values were not checked. Labels are not used, so mixed labels (Mixup,
CutMix) change nothing here; the ``ce`` term beside it uses them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.typed_config import LOSS_WEIGHT, Options, option

from .base import LossTerm, StepOutput
from .registry import register_loss


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """H(softmax(logits)) = -sum_c p_c log p_c per sample, averaged over the batch (in nats)."""
    log_probs = F.log_softmax(logits.float(), dim=1)
    return -(log_probs.exp() * log_probs).sum(dim=1).mean()


@dataclass
class MaxEntropyConfig(Options):
    beta: float = option(
        0.005,
        "weight beta of the (subtracted) batch-mean entropy; Self-KD-Lib's CIFAR-100 "
        "setting is 0.5 per element over K classes = 0.5 / K = 0.005",
        **LOSS_WEIGHT,
    )


@register_loss("max_entropy", MaxEntropyConfig)
class ConfidencePenalty(LossTerm):
    def __init__(self, config: MaxEntropyConfig):
        super().__init__()
        self.config = config

    def forward(self, step: StepOutput):
        return {"max_entropy": -self.config.beta * entropy(step.logits)}
