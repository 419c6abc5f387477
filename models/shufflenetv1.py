"""ShuffleNet V1 for CIFAR as in the CIFAR-100 KD benchmark: 3 groups, stage widths 240/480/960.

A 1x1 conv stem at full resolution, then three stages of 4, 8 and 4 bottleneck units; each stage's
first unit halves the resolution and concatenates an average-pooled shortcut. Stage features are the
post-ReLU stage outputs: 240@16, 480@8, 960@4 for a 32x32 input.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import StagedNet, channel_shuffle, conv_bn, init_weights
from .registry import register_model

_STEM_CHANNELS = 24


class ShuffleUnit(nn.Module):
    """Grouped 1x1 -> shuffle -> 3x3 depthwise -> grouped linear 1x1. A stride-2 unit concatenates its
    branch with the 3x3 average-pooled input (so the branch supplies out_channels - in_channels
    channels); a stride-1 unit adds the identity."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int):
        super().__init__()
        self.stride = stride
        branch_channels = out_channels - in_channels if stride == 2 else out_channels
        mid = branch_channels // 4
        # The stem's 24 channels are too few to split into groups.
        self.first_groups = 1 if in_channels == _STEM_CHANNELS else groups
        self.reduce = conv_bn(in_channels, mid, 1, groups=self.first_groups)
        self.depthwise = conv_bn(mid, mid, 3, stride, groups=mid)
        self.expand = conv_bn(mid, branch_channels, 1, groups=groups, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.expand(self.depthwise(channel_shuffle(self.reduce(x), self.first_groups)))
        if self.stride == 2:
            out = torch.cat([out, F.avg_pool2d(x, 3, stride=2, padding=1)], 1)
        else:
            out = out + x
        return F.relu(out)


class CifarShuffleNetV1(StagedNet):
    def __init__(self, num_classes: int, widths=(240, 480, 960), blocks=(4, 8, 4), groups: int = 3):
        super().__init__()
        self.stem = conv_bn(3, _STEM_CHANNELS, 1)
        stages, in_channels = [], _STEM_CHANNELS
        for width, count in zip(widths, blocks):
            units = []
            for index in range(count):
                units.append(ShuffleUnit(in_channels, width, 2 if index == 0 else 1, groups))
                in_channels = width
            stages.append(nn.Sequential(*units))
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(in_channels, num_classes)
        init_weights(self)


@register_model("shufflenetv1")
def shufflenetv1(num_classes: int) -> nn.Module:
    return CifarShuffleNetV1(num_classes)
