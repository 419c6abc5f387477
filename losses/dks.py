"""DKS, deeply-supervised knowledge synergy (Sun et al., CVPR 2019): auxiliary exits on intermediate
stages, every exit trained with the labels and with the predictions of every other exit.

Exits: a branch (``losses/branches.py``) from each stage in ``stages`` rebuilds the later stages and
ends in its own classifier; the backbone's classifier is the last exit. With z_1..z_M the exits'
logits and p_m^T = softmax(z_m / T), the loss is

    L = sum_m CE(z_m, y) + weight * sum_{j != k} T^2 * KL_bm(sg(p_k^T) || p_j^T)

(KL_bm = batch mean of sum_c a_c log(a_c / b_c)): every ordered pair, so each exit learns from every
other one, top-down and bottom-up, and never sends gradient through its own role as a teacher.

Originals. The authors' code (sundw2014/DKS ``wrn_DKS/main.py``, ``KL_divergence.py``, ``resnet.py``)
takes the pairwise KL at T = 1 on probabilities smoothed as (p + eps) / (1 + K eps), eps = 1e-8; its
WRN-28-10 has two branches, from the first group ([a copy of group 1, half of group 2]) and from the
second ([group 2 at twice the width]). Self-KD-Lib's ``methods/dks.py`` (with ``models/resnet.py``
``CIFAR_ResNet18_dks``) takes the same pairwise sum through its KD loss at T = 4 with the T^2 factor
and no smoothing, on a PreAct ResNet-18 with branches from stage 2 ([1 block of stage 3, 2 of stage 4])
and stage 3 ([2 blocks of stage 4]). ``knowledge_synergy`` covers both: T = 1 with eps 1e-8 is the
authors', T = 4 with eps 0 Self-KD-Lib's.

Defaults. The loss follows the authors (T = 1, eps = 1e-8): it is the paper's formula and the code its
numbers came from. The branches follow Self-KD-Lib's ResNet-18 layout, the only ResNet one published
(the authors' ImageNet ResNets come as weights without training code): ``stages`` null = the two
stages just below the deepest (2 and 3 on a 4-stage ResNet-18, 1 and 2 on a 3-stage CIFAR ResNet,
which is also where the authors' WRN puts them), ``blocks`` [[1, 2], [2]], widths 1. Our branches
use post-activation basic blocks whatever the backbone. Under Mixup or CutMix every exit's CE is taken
against the mixed labels; the synergy reads no label.

The branches are the term's parameters: trained by the optimizer with the model, kept in the
checkpoint's ``"terms"``, never exported; the evaluated model is the backbone alone, which is what
both originals report (the backbone's exit). The term is the whole loss: list it without ``ce``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.errors import ConfigError, shown
from core.typed_config import LOSS_WEIGHT, STAGE, TEMPERATURE, Options, option

from .base import LossTerm, StepOutput, TrainingSetup
from .branches import Branch, check_branches, rebuilt_stages
from .registry import register_loss


def _log_probs(logits: torch.Tensor, temperature: float, smoothing: float) -> torch.Tensor:
    """log of softmax(z / T), smoothed as (p + eps) / (1 + K eps) when eps > 0."""
    if smoothing == 0:
        return F.log_softmax(logits / temperature, dim=1)
    probs = F.softmax(logits / temperature, dim=1)
    return torch.log(probs + smoothing) - math.log1p(logits.shape[1] * smoothing)


def knowledge_synergy(logits_list: Sequence[torch.Tensor], temperature: float, smoothing: float = 0.0) -> torch.Tensor:
    """sum over ordered pairs j != k of T^2 * KL_bm(sg(p_k^T) || p_j^T), p_m^T = softmax(z_m / T)
    (smoothed to (p + eps) / (1 + K eps) where ``smoothing`` = eps > 0): exit j learns from exit k,
    whose side is detached."""
    log_probs = [_log_probs(z.float(), temperature, smoothing) for z in logits_list]
    total = log_probs[0].new_zeros(())
    for j, student in enumerate(log_probs):
        for k, teacher in enumerate(log_probs):
            if j != k:
                teacher = teacher.detach()
                total = total + (teacher.exp() * (teacher - student)).sum(1).mean()
    return temperature**2 * total


@dataclass
class DKSConfig(Options):
    weight: float = option(1.0, "weight of the pairwise synergy term (the CE terms have weight 1)", **LOSS_WEIGHT)
    temperature: float = option(
        1.0, "softmax temperature T of the synergy (1: the authors; 4: Self-KD-Lib)", **TEMPERATURE
    )
    smoothing: float = option(
        1e-8,
        "eps of the probabilities' smoothing (p + eps) / (1 + K eps) (1e-8: the authors; 0: Self-KD-Lib)",
        min=0,
        max=1e-3,
    )
    stages: Optional[list[int]] = option(
        None, "stages that get a branch, counted from 1; null = the two stages just below the deepest", **STAGE
    )
    blocks: list[list[int]] = option(
        [[1, 2], [2]],
        "per branch (shallow to deep), the basic blocks of each stage "
        "it rebuilds (Self-KD-Lib's ResNet-18: [[1, 2], [2]])",
        min=1,
        max=16,
    )
    widths: Optional[list[float]] = option(
        None, "per branch, a channel multiplier of its rebuilt stages; null = 1 for every branch", above=0, max=16
    )


@register_loss("dks", DKSConfig)
class DeeplySupervisedKnowledgeSynergy(LossTerm):
    def __init__(self, config: DKSConfig):
        super().__init__()
        self.config = config
        self.stages: list[int] = []
        self.branches = nn.ModuleList()  # made by attach(), from the model's stage shapes

    def _stages(self, num_stages: int) -> list[int]:
        return self.config.stages if self.config.stages is not None else list(range(max(1, num_stages - 2), num_stages))

    def _widths(self, count: int) -> list[float]:
        return self.config.widths if self.config.widths is not None else [1.0] * count

    def check_features(self, feature_shapes) -> None:
        cfg, stages = self.config, self._stages(len(feature_shapes))
        check_branches(feature_shapes, stages, "loss.dks")
        widths = self._widths(len(stages))
        if len(cfg.blocks) != len(stages) or len(widths) != len(stages):
            raise ConfigError(
                f"loss.dks has {len(stages)} branches (stages {shown(stages)}) but {len(cfg.blocks)} "
                f"lists in loss.dks.blocks and {len(widths)} loss.dks.widths; give one per branch"
            )
        for stage, blocks in zip(stages, cfg.blocks):
            rebuilt = len(rebuilt_stages(feature_shapes, stage))
            if len(blocks) != rebuilt:
                raise ConfigError(
                    f"loss.dks.blocks gives {blocks} for the branch from stage {stage}, which rebuilds "
                    f"{rebuilt} stages ({stage + 1}..{len(feature_shapes)}); give {rebuilt} block counts"
                )

    def attach(self, setup: TrainingSetup) -> None:
        self.stages = self._stages(len(setup.feature_shapes))
        for stage, blocks, width in zip(self.stages, self.config.blocks, self._widths(len(self.stages))):
            self.branches.append(Branch(setup.feature_shapes, stage, blocks, setup.num_classes, width))

    def forward(self, step: StepOutput):
        cfg = self.config
        targets = step.labels
        exits = [branch(step.feats[stage - 1])[0] for stage, branch in zip(self.stages, self.branches)]
        exits.append(step.logits)
        ce = sum(F.cross_entropy(z.float(), targets) for z in exits)
        return {"dks_ce": ce, "dks_kd": cfg.weight * knowledge_synergy(exits, cfg.temperature, cfg.smoothing)}
