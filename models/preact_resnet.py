"""preact_resnet18: the pre-activation CIFAR ResNet-18 of CS-KD, PS-KD, BAKE, Zipf's LS and
Self-KD-Lib (their ``CIFAR_ResNet18``), 11,217,444 parameters at 100 classes.

A 3x3 stride-1 conv-BN-ReLU stem, no max-pool, four stages of two pre-activation blocks with
64/128/256/512 channels, no final BN-ReLU before pooling. As in those repositories, a block's
identity shortcut adds its pre-activated input relu(bn1(x)), not x itself (the projection shortcut,
a 1x1 conv without BN, reads the same pre-activated input): kept, since their published numbers come
from this network. Stage features are the stage outputs, residual sums that can be negative.
"""

from __future__ import annotations

import torch.nn as nn

from .layers import StagedNet, init_weights
from .registry import register_model
from .wrn import PreActBlock


class PreActResNet18(StagedNet):
    def __init__(self, num_classes: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True))
        stages, in_planes = [], 64
        for index, planes in enumerate((64, 128, 256, 512)):
            stride = 1 if index == 0 else 2
            stages.append(
                nn.Sequential(
                    PreActBlock(in_planes, planes, stride, identity_on_activated=True),
                    PreActBlock(planes, planes, 1, identity_on_activated=True),
                )
            )
            in_planes = planes
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(512, num_classes)
        init_weights(self)


register_model("preact_resnet18")(PreActResNet18)
