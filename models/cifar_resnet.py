"""Post-activation CIFAR ResNets: resnet20/32/56/110 and the 4x-wide resnet8x4/32x4 of the CIFAR-100
KD benchmark (6n+2 layers of basic blocks in three stages), and cifar_resnet18, the ResNet-18 of the
self-distillation literature on CIFAR (a 3x3 stride-1 stem, no max-pool, four stages of two blocks,
64/128/256/512 channels: Tf-KD's, BYOT's and mmcls's ResNet_CIFAR, 11,220,132 parameters at 100
classes). A 1x1 conv + BN projection where the shape changes; stage features are the post-ReLU
outputs of the stages.
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
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(StagedNet):
    """``widths``: the stem's channels, then each stage's; the first stage keeps the resolution and
    every later one halves it."""

    def __init__(self, blocks_per_stage: int, widths: tuple[int, ...], num_classes: int):
        super().__init__()
        stem, *stage_widths = widths
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU(inplace=True))
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


def six_n_plus_2(depth: int) -> int:
    """Blocks per stage of a 6n+2-layer, three-stage CIFAR ResNet."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    return (depth - 2) // 6


_NARROW = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)

for _depth in (20, 32, 56, 110):
    register_model(f"resnet{_depth}")(
        lambda num_classes, depth=_depth: CifarResNet(six_n_plus_2(depth), _NARROW, num_classes)
    )
for _depth in (8, 32):
    register_model(f"resnet{_depth}x4")(
        lambda num_classes, depth=_depth: CifarResNet(six_n_plus_2(depth), _WIDE, num_classes)
    )
register_model("cifar_resnet18")(lambda num_classes: CifarResNet(2, (64, 64, 128, 256, 512), num_classes))
