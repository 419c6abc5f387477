"""Building blocks shared by several backbone families."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1,
            relu: bool = True) -> nn.Sequential:
    """Bias-free conv ("same" padding) + BatchNorm, optionally + ReLU."""
    layers = [nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False),
              nn.BatchNorm2d(out_channels)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` groups so the next grouped conv mixes information across them."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def init_weights(model: nn.Module) -> None:
    """The usual CNN initialisation: He (fan-out) convolutions, unit BatchNorm, small linear layers."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.zeros_(module.bias)


class StagedNet(nn.Module):
    """stem -> stages -> classifier. Subclasses set ``stem``, ``stages`` (a ModuleList) and ``fc``;
    every stage's output is a stage feature. Returns ``(logits, stage_features)``."""

    def forward(self, x: torch.Tensor):
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return self.classify(x), feats

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pooling and the linear classifier; overridden where a head block comes first."""
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

