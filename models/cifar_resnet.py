"""CIFAR ResNets of the CIFAR-100 KD benchmark: resnet20/32/56/110 and the 4x-wide resnet8x4/32x4.

6n+2 layers of basic blocks in three stages; a 1x1 conv + BN projection where the shape changes.
Stage features are the post-ReLU outputs of the three stages.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import StagedNet
from .registry import register_model


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(StagedNet):
    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        blocks_per_stage = (depth - 2) // 6
        stem, *stage_widths = widths
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU(inplace=True)
        )
        stages, in_planes = [], stem
        for index, planes in enumerate(stage_widths):
            stride = 1 if index == 0 else 2
            blocks = []
            for block_index in range(blocks_per_stage):
                blocks.append(BasicBlock(in_planes, planes, stride if block_index == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(in_planes, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)



_NARROW = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)

for _depth in (20, 32, 56, 110):
    register_model(f"resnet{_depth}")(
        lambda num_classes, depth=_depth: CifarResNet(depth, _NARROW, num_classes)
    )
for _depth in (8, 32):
    register_model(f"resnet{_depth}x4")(
        lambda num_classes, depth=_depth: CifarResNet(depth, _WIDE, num_classes)
    )
