"""Cross-entropy with the ground-truth labels."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from core.errors import ConfigError
from core.typed_config import LOSS_WEIGHT, Options, option

from .base import LossTerm, StepOutput, TrainingSetup
from .registry import register_loss


@dataclass
class CEConfig(Options):
    weight: float = option(1.0, "weight of the cross-entropy term (0.1 in the CIFAR KD protocol)", **LOSS_WEIGHT)
    label_smoothing: float = option(0.0, "label smoothing epsilon", min=0, max=1)
    label_smoothing_to: str = option(
        "all",
        "where the smoothing mass goes: all (torch's: eps/K to every class, the target included) or others "
        "(eps/(K-1) to each other class, 1 - eps to the target: Self-KD-Lib's and the released Tf-FD code's)",
        choices=("all", "others"),
    )


@register_loss("ce", CEConfig)
class CrossEntropy(LossTerm):
    def __init__(self, config: CEConfig):
        super().__init__()
        self.config = config

    def attach(self, setup: TrainingSetup) -> None:
        classes, eps = setup.num_classes, self.config.label_smoothing
        if self.config.label_smoothing_to == "others" and eps > (classes - 1) / classes:
            raise ConfigError(
                f"loss.ce.label_smoothing={eps:g} with label_smoothing_to=others would give the target "
                f"less than each other class of the {classes}; use at most {(classes - 1) / classes:g}"
            )

    def forward(self, step: StepOutput):
        # Against mixed labels where a batch transform made them: lam * CE(y_a) + (1 - lam) * CE(y_b).
        targets = step.labels
        smoothing = self.config.label_smoothing
        if self.config.label_smoothing_to == "others":  # the same target as torch's eps * K / (K - 1)
            classes = step.logits.shape[1]
            smoothing = smoothing * classes / (classes - 1)
        loss = F.cross_entropy(step.logits, targets, label_smoothing=smoothing)
        return {"ce": self.config.weight * loss}
