"""Pre-activation wide ResNets of the CIFAR-100 KD benchmark: wrn_16_2, wrn_40_1, wrn_40_2.

WRN-d-k: a 3x3 stem with 16 channels, then three stages of (d - 4) / 6 pre-activation basic blocks with
16k, 32k and 64k channels; a final BN + ReLU before pooling. Pre-activation blocks add the residual
branch to an un-normalised identity, so the stage features (the stage outputs, before the final BN)
are residual sums and can be negative.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import StagedNet, init_weights
from .registry import register_model


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus a shortcut; where the shape changes, the shortcut is a
    1x1 conv applied to the pre-activated input (so the input's BN-ReLU serves both paths).
    ``identity_on_activated``: the identity shortcut adds the pre-activated input too, not x (the
    CS-KD / PS-KD PreAct ResNet-18, models/preact_resnet.py)."""

    def __init__(self, in_planes: int, planes: int, stride: int, identity_on_activated: bool = False):
        super().__init__()
        self.identity_on_activated = identity_on_activated
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.projection = None
        if stride != 1 or in_planes != planes:
            self.projection = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(activated))))
        if self.projection is not None:
            shortcut = self.projection(activated)
        else:
            shortcut = activated if self.identity_on_activated else x
        return out + shortcut


class WideResNet(StagedNet):
    def __init__(self, depth: int, widen_factor: int, num_classes: int):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        blocks_per_stage = (depth - 4) // 6
        self.stem = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        stages, in_planes = [], 16
        for index, base in enumerate((16, 32, 64)):
            planes = base * widen_factor
            blocks = []
            for block_index in range(blocks_per_stage):
                stride = 2 if index > 0 and block_index == 0 else 1
                blocks.append(PreActBlock(in_planes, planes, stride))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.final_bn = nn.BatchNorm2d(in_planes)
        self.fc = nn.Linear(in_planes, num_classes)
        init_weights(self)

    def pre_pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.final_bn(x))  # pre-activation: the last BN + ReLU


for _depth, _width in ((16, 2), (40, 1), (40, 2)):
    register_model(f"wrn_{_depth}_{_width}")(
        lambda num_classes, depth=_depth, width=_width: WideResNet(depth, width, num_classes)
    )
