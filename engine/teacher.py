"""The frozen teacher of teacher-based terms (KD). Built only when an active term needs one."""
from __future__ import annotations

import torch
import torch.nn as nn

from models import build_model

from .checkpoint import load_model_weights
from .errors import ConfigError


class FrozenTeacher(nn.Module):
    """A model in eval mode with no gradients whose ``train()`` cannot switch it back."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    def train(self, mode: bool = True):
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)[0]


def build_teacher(teacher_config, num_classes: int, device: torch.device) -> FrozenTeacher:
    if not teacher_config.model or not teacher_config.checkpoint:
        raise ConfigError(
            "an active loss term needs a teacher: set teacher.model and teacher.checkpoint "
            "(e.g. teacher.model=resnet110 teacher.checkpoint=runs/cifar100/resnet110_ce/best.pt)"
        )
    model = build_model(teacher_config.model, num_classes)
    load_model_weights(model, teacher_config.checkpoint, what=f"teacher checkpoint ({teacher_config.model})")
    return FrozenTeacher(model).to(device)
