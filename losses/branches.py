"""Auxiliary branches that rebuild the backbone's later stages, for terms with extra exits (DKS, MixSKD).

A branch from stage i takes that stage's output (C_i x H_i x W_i) and, for every deeper stage j, stacks
residual basic blocks that go from C_{j-1} to C_j channels with stride H_{j-1} / H_j, so it ends in a
map of the deepest stage's shape (times an optional channel multiplier); a global average pool and a
linear classifier give its logits. The block is the CIFAR ResNets' post-activation basic block
(``models/cifar_resnet.py``): conv3x3-BN-ReLU-conv3x3-BN, plus a 1x1 conv-BN projection on the
shortcut where the shape changes, ReLU after the sum. Everything is read from the stage shapes, so
any backbone whose stages shrink by integer factors, equal in height and width, gets branches;
``check_branches`` refuses the others. (BYOT's heads, ``losses/byot.py``, are another design: a
bottleneck.)
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.errors import ConfigError, shown
from models.cifar_resnet import BasicBlock  # conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU

Shape = tuple[int, int, int]  # C x H x W


def check_branches(feature_shapes: Sequence[Shape], stages: Sequence[int], key: str) -> None:
    """Raise ``ConfigError`` (one line, naming ``key``) unless every stage in ``stages`` can get a
    branch: at least one, none twice, each below the deepest, and every deeper stage an integer
    down-scaling of the one before it, by the same factor in height and width."""
    num_stages = len(feature_shapes)
    if not stages:
        raise ConfigError(
            f"{key}.stages is empty, or the model has a single stage: a branch needs a stage below "
            f"the deepest (use null for the default)"
        )
    if len(set(stages)) != len(stages):
        raise ConfigError(f"{key}.stages lists a stage twice: {shown(list(stages))}")
    for stage in stages:
        if not 1 <= stage < num_stages:
            raise ConfigError(
                f"{key}.stages names stage {stage}; branches start from stages 1..{num_stages - 1} "
                f"(the deepest, {num_stages}, is the backbone's own exit)"
            )
    for j in range(min(stages), num_stages):  # 0-based: stage j + 1 from stage j
        (_, h0, w0), (_, h1, w1) = feature_shapes[j - 1], feature_shapes[j]
        if h0 % h1 or w0 % w1 or h0 // h1 != w0 // w1:
            raise ConfigError(
                f"{key}: stage {j + 1}'s {h1}x{w1} feature is not stage {j}'s {h0}x{w0} shrunk by one "
                f"integer factor in height and width, so no branch can rebuild it; keep {key}.stages "
                f"at or above stage {j + 1}"
            )


def rebuilt_stages(feature_shapes: Sequence[Shape], stage: int, width: float = 1.0) -> list[tuple[int, int, int]]:
    """(in channels, out channels, stride) of each stage a branch from ``stage`` (counted from 1)
    rebuilds: stages stage+1 .. deepest, with their channels times ``width``."""
    plan, channels = [], feature_shapes[stage - 1][0]
    for j in range(stage, len(feature_shapes)):
        out_channels = max(1, round(feature_shapes[j][0] * width))
        plan.append((channels, out_channels, feature_shapes[j - 1][1] // feature_shapes[j][1]))
        channels = out_channels
    return plan


class Branch(nn.Module):
    """An exit from one stage: the rebuilt later stages, then GAP and a linear classifier.
    ``forward`` returns ``(logits, final map)``; the map has the deepest stage's shape (channels times
    ``width``). ``blocks`` gives the number of basic blocks for each rebuilt stage, shallow to deep."""

    def __init__(
        self, feature_shapes: Sequence[Shape], stage: int, blocks: Sequence[int], num_classes: int, width: float = 1.0
    ):
        super().__init__()
        plan = rebuilt_stages(feature_shapes, stage, width)
        if len(blocks) != len(plan) or min(blocks, default=1) < 1:
            raise ValueError(
                f"a branch from stage {stage} rebuilds {len(plan)} stages: give that many block "
                f"counts >= 1, not {list(blocks)}"
            )
        self.stages = nn.Sequential(
            *(
                nn.Sequential(
                    *(BasicBlock(cin if b == 0 else cout, cout, stride if b == 0 else 1) for b in range(count))
                )
                for (cin, cout, stride), count in zip(plan, blocks)
            )
        )
        self.out_channels = plan[-1][1]
        self.fc = nn.Linear(self.out_channels, num_classes)

    def forward(self, x: torch.Tensor):
        feature = self.stages(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(feature, 1), 1)), feature
