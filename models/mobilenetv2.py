"""MobileNetV2 for CIFAR as in the CIFAR-100 KD benchmark: ``mobilenetv2`` is width 0.5, expansion 6.

Differences from the ImageNet network (``mobilenetv2_imagenet``): the second block group keeps stride 1,
so the network downsamples 16x, not 32x, and a 32x32 input ends at 2x2; the 1x1 expansion is
kept in the first group; the head has 1280 channels whatever the width. The stage features are the
outputs of the block groups that end each resolution, i.e. linear bottlenecks (no ReLU): 12@16, 16@8,
48@4, 160@2 at width 0.5. The stem (16 channels) is wider than the first stage, one reason Tf-FD
excludes it.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .layers import Backbone, conv_bn, init_weights
from .registry import register_model

# (expansion, output channels at width 1, blocks, stride of the first block); None = the model's expansion
_GROUPS = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)
# Block groups after which a stage feature is taken (the last group at each resolution).
_STAGE_ENDS = (1, 2, 4, 6)
_HEAD_CHANNELS = 1280


class InvertedResidual(nn.Module):
    """1x1 expansion, 3x3 depthwise, linear 1x1 projection; identity shortcut when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        # Kept even for expansion 1 (torchvision drops it), as in the benchmark's definition.
        self.block = nn.Sequential(
            conv_bn(in_channels, hidden, 1),
            conv_bn(hidden, hidden, 3, stride, groups=hidden),
            conv_bn(hidden, out_channels, 1, relu=False),
        )
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


class CifarMobileNetV2(Backbone):
    def __init__(self, num_classes: int, width: float = 0.5, expansion: int = 6):
        super().__init__()
        in_channels = int(32 * width)
        self.stem = conv_bn(3, in_channels, 3, stride=2)
        groups = []
        for group_expansion, channels, blocks, stride in _GROUPS:
            out_channels = int(channels * width)
            layers = []
            for index in range(blocks):
                layers.append(
                    InvertedResidual(
                        in_channels, out_channels, stride if index == 0 else 1, group_expansion or expansion
                    )
                )
                in_channels = out_channels
            groups.append(nn.Sequential(*layers))
        self.groups = nn.ModuleList(groups)
        self.head = conv_bn(in_channels, _HEAD_CHANNELS, 1)
        self.fc = nn.Linear(_HEAD_CHANNELS, num_classes)
        init_weights(self)

    def forward_maps(self, x: torch.Tensor):
        x = self.stem(x)
        feats = []
        for index, group in enumerate(self.groups):
            x = group(x)
            if index in _STAGE_ENDS:
                feats.append(x)
        return feats, self.head(x)


@register_model("mobilenetv2")
def mobilenetv2(num_classes: int) -> nn.Module:
    return CifarMobileNetV2(num_classes, width=0.5)
