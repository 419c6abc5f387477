"""Building blocks shared by several backbone families."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_bn(
    in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True
) -> nn.Sequential:
    """Bias-free conv ("same" padding) + BatchNorm, optionally + ReLU."""
    layers = [
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
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


class Backbone(nn.Module):
    """What every model is: ``forward_maps(x)`` gives the stage features and the map the classifier
    pools (the last stage's output after any head block: a final BN-ReLU, a 1x1 conv to the head width);
    ``classify_map`` pools that map and classifies it. ``forward(x)`` is the two, ``(logits, stage_features)``.
    The trainer calls the two parts itself, so a loss term can read the pooled map (``StepOutput.head_map``,
    e.g. the embedding BAKE compares) and classify other maps with the same classifier (Zipf's LS's
    per-pixel votes)."""

    def forward(self, x: torch.Tensor):
        feats, head_map = self.forward_maps(x)
        return self.classify_map(head_map), feats

    def forward_maps(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        raise NotImplementedError

    def classify_map(self, head_map: torch.Tensor) -> torch.Tensor:
        """Global average pooling and the linear classifier: N x D x H x W -> N x K."""
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(head_map, 1), 1))


class StagedNet(Backbone):
    """stem -> stages -> classifier. Subclasses set ``stem``, ``stages`` (a ModuleList) and ``fc``;
    every stage's output is a stage feature."""

    def forward_maps(self, x: torch.Tensor):
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats, self.pre_pool(x)

    def pre_pool(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's output as the classifier pools it; overridden where a head block comes first."""
        return x
