"""ShuffleNet V2 (1x) for CIFAR as in the CIFAR-100 KD benchmark: stage widths 116/232/464, head 1024.

A 3x3 stem at full resolution (no max-pooling), then three stages, each a down-sampling unit followed
by 3, 7 and 3 basic units, and a 1x1 conv head. Stage features are the stage outputs (after the
channel shuffle): 116@16, 232@8, 464@4 for a 32x32 input.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .layers import StagedNet, channel_shuffle, conv_bn, init_weights
from .registry import register_model

_STEM_CHANNELS = 24


def branch(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """1x1 conv + ReLU, 3x3 depthwise (no ReLU), 1x1 conv + ReLU."""
    return nn.Sequential(
        conv_bn(in_channels, out_channels, 1),
        conv_bn(out_channels, out_channels, 3, stride, groups=out_channels, relu=False),
        conv_bn(out_channels, out_channels, 1),
    )


class BasicUnit(nn.Module):
    """Split the channels in halves; one half passes through, the other through a branch; concat, shuffle."""

    def __init__(self, channels: int):
        super().__init__()
        self.branch = branch(channels // 2, channels // 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept, transformed = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat([kept, self.branch(transformed)], 1), 2)


class DownUnit(nn.Module):
    """Both paths see the whole input at stride 2 and produce half of the output channels each."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        half = out_channels // 2
        self.left = nn.Sequential(
            conv_bn(in_channels, in_channels, 3, 2, groups=in_channels, relu=False),
            conv_bn(in_channels, half, 1),
        )
        self.right = nn.Sequential(
            conv_bn(in_channels, half, 1), conv_bn(half, half, 3, 2, groups=half, relu=False), conv_bn(half, half, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(torch.cat([self.left(x), self.right(x)], 1), 2)


class CifarShuffleNetV2(StagedNet):
    def __init__(self, num_classes: int, widths=(116, 232, 464), blocks=(3, 7, 3), head_channels: int = 1024):
        super().__init__()
        self.stem = conv_bn(3, _STEM_CHANNELS, 3)
        stages, in_channels = [], _STEM_CHANNELS
        for width, count in zip(widths, blocks):
            stages.append(nn.Sequential(DownUnit(in_channels, width), *(BasicUnit(width) for _ in range(count))))
            in_channels = width
        self.stages = nn.ModuleList(stages)
        self.head = conv_bn(in_channels, head_channels, 1)
        self.fc = nn.Linear(head_channels, num_classes)
        init_weights(self)

    def pre_pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)  # the 1x1 conv to the head width


@register_model("shufflenetv2")
def shufflenetv2(num_classes: int) -> nn.Module:
    return CifarShuffleNetV2(num_classes)
