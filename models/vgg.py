"""VGG with BatchNorm and the CIFAR head of the CIFAR-100 KD benchmark: vgg8, vgg13.

Five blocks of 3x3 conv + BN + ReLU; 2x2 max-pooling after the first three blocks only, so a 32x32
input reaches 4x4 at the fourth block and the fifth block keeps that size; global average pooling and
a single linear layer. The fourth and fifth blocks, both at the deepest size, form the last stage:
stage features are 64@32, 128@16, 256@8, 512@4, each post-ReLU.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import Backbone, init_weights
from .registry import register_model

# Output channels of the convolutions of each of the five blocks.
_CONFIGS = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
}


def conv_block(in_channels: int, widths: tuple[int, ...]) -> nn.Sequential:
    layers = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        in_channels = width
    return nn.Sequential(*layers)


class VGG(Backbone):
    def __init__(self, widths: tuple[tuple[int, ...], ...], num_classes: int):
        super().__init__()
        blocks, in_channels = [], 3
        for block_widths in widths:
            blocks.append(conv_block(in_channels, block_widths))
            in_channels = block_widths[-1]
        # No pooling between the fourth and fifth blocks: together they are the last stage.
        *early, fourth, fifth = blocks
        self.stages = nn.ModuleList([*early, nn.Sequential(fourth, fifth)])
        self.fc = nn.Linear(in_channels, num_classes)
        init_weights(self)

    def forward_maps(self, x: torch.Tensor):
        feats = []
        for index, stage in enumerate(self.stages):
            if index > 0:
                x = F.max_pool2d(x, 2)
            x = stage(x)
            feats.append(x)
        return feats, x


for _name, _widths in _CONFIGS.items():
    register_model(_name)(lambda num_classes, widths=_widths: VGG(widths, num_classes))
