"""The frozen teacher of teacher-based terms (KD). Built only when an active term needs one, so a
method without such a term never loads, stores or runs a teacher."""

from __future__ import annotations

import torch
import torch.nn as nn

from core.errors import ConfigError
from models import build_model

from .checkpoint import load_model_weights


class FrozenTeacher(nn.Module):
    """A model in eval mode with no gradients whose ``train()`` cannot switch it back: BatchNorm keeps
    its running statistics and dropout stays off, whatever the trainer does to the modules around it."""

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
    """The teacher ``teacher.model`` with the weights of ``teacher.checkpoint`` (a run's best.pt/last.pt
    or a bare state_dict). A missing or corrupt file, another architecture or another class count is a
    ``CheckpointError`` before any training."""
    if not teacher_config.model or not teacher_config.checkpoint:
        raise ConfigError(
            "an active loss term needs a teacher: set teacher.model and teacher.checkpoint "
            "(e.g. teacher.model=resnet110 teacher.checkpoint=runs/cifar100/resnet110_ce/best.pt)"
        )
    model = build_model(teacher_config.model, num_classes)
    load_model_weights(
        model,
        teacher_config.checkpoint,
        what="teacher.checkpoint",
        model_name=teacher_config.model,
        num_classes=num_classes,
    )
    return FrozenTeacher(model).to(device)
