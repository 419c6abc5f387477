"""ImageNet backbones: resnet18/34/50 and mobilenetv2_imagenet wrap torchvision's definitions;
mobilenetv1 (the usual 4.2M-parameter ResNet-50 -> MobileNet KD student) is defined here.

The wrappers adopt torchvision's modules under their original names, so their state_dict keys are
torchvision's and a torchvision weight file loads through ``model.weights`` unchanged. Nothing is
downloaded: torchvision builds the networks with ``weights=None``. Their forward is torchvision's,
split at the stage boundaries to return the stage outputs (checked against torchvision in the tests).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision import models as tv

from .layers import Backbone, StagedNet, conv_bn, init_weights
from .registry import register_model


class _Adopted(Backbone):
    """Takes over a torchvision model's child modules under their own names."""

    def __init__(self, net: nn.Module):
        super().__init__()
        for name, module in net.named_children():
            self.add_module(name, module)


class ResNetStages(_Adopted):
    """torchvision's ResNet; stage features are the outputs of layer1..layer4 (post-ReLU)."""

    def forward_maps(self, x: torch.Tensor):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            feats.append(x)
        return feats, x


class MobileNetV2Stages(_Adopted):
    """torchvision's MobileNetV2; stage features are the linear-bottleneck outputs of the last
    inverted-residual block at output strides 8, 16 and 32 (32@28, 96@14, 320@7), the block groups of
    the CIFAR ``mobilenetv2``'s last three stages. The 1x1 conv to 1280 channels that follows is the
    head, not a stage."""

    STAGE_ENDS = (6, 13, 17)  # indices into torchvision's ``features``

    def forward_maps(self, x: torch.Tensor):
        feats = []
        for index, block in enumerate(self.features):
            x = block(x)
            if index in self.STAGE_ENDS:
                feats.append(x)
        return feats, x

    def classify_map(self, head_map: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(head_map, 1), 1))  # dropout, then the linear layer


for _name in ("resnet18", "resnet34", "resnet50"):
    register_model(_name)(
        lambda num_classes, name=_name: ResNetStages(getattr(tv, name)(weights=None, num_classes=num_classes))
    )


@register_model("mobilenetv2_imagenet")
def mobilenetv2_imagenet(num_classes: int) -> nn.Module:
    return MobileNetV2Stages(tv.mobilenet_v2(weights=None, num_classes=num_classes))


def separable(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """3x3 depthwise conv + BN + ReLU, then 1x1 pointwise conv + BN + ReLU."""
    return nn.Sequential(
        conv_bn(in_channels, in_channels, 3, stride, groups=in_channels), conv_bn(in_channels, out_channels, 1, 1)
    )


class MobileNetV1(StagedNet):
    """MobileNet (Howard et al. 2017), width 1, 224x224 input. The layers up to output stride 4 are the
    stem; the three stages end at output strides 8, 16 and 32: 256@28, 512@14, 1024@7."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.stem = nn.Sequential(
            conv_bn(3, 32, 3, 2), separable(32, 64, 1), separable(64, 128, 2), separable(128, 128, 1)
        )
        self.stages = nn.ModuleList(
            [
                nn.Sequential(separable(128, 256, 2), separable(256, 256, 1)),
                nn.Sequential(separable(256, 512, 2), *(separable(512, 512, 1) for _ in range(5))),
                nn.Sequential(separable(512, 1024, 2), separable(1024, 1024, 1)),
            ]
        )
        self.fc = nn.Linear(1024, num_classes)
        init_weights(self)


@register_model("mobilenetv1")
def mobilenetv1(num_classes: int) -> nn.Module:
    return MobileNetV1(num_classes)
