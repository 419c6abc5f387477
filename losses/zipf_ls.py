"""Zipf's label smoothing (Liang et al., "Efficient One Pass Self-distillation with Zipf's Label
Smoothing", ECCV 2022): the network's own per-pixel opinions decide how the label's smoothing mass is
shared among the wrong classes.

Every pixel of the map the classifier pools (``StepOutput.head_map``, upsampled first) is classified on
its own by the model's final linear layer; each pixel votes for its argmax class. With v_c the votes
of class c, rank_c = 1 + #{j : v_j > v_c} over all K classes, the true class y included (ties share
the smallest rank, so every class without a vote shares one rank). The target over the K - 1 other
classes follows Zipf's law in those ranks:

    q_c = rank_c^(-power) / sum_{j != y} rank_j^(-power)      (c != y; no gradient)
    L_zipf = mean over the batch of KL(q || softmax(z_{-y}))

where z_{-y} are the logits with the true class's logit left out (the softmax over the other K - 1 logits,
i.e. the model's probabilities of the wrong classes renormalised). The total is CE + lambda * L_zipf
(the ``ce`` term and this one), at T = 1.

This follows the authors' PyTorch code (megvii-research/zipfls ``pytorch_zipfls/train.py``,
``losses.py`` ``zipf_loss``/``gen_pdf``/``kl_loss``, ``cifar_models/resnet.py``) with the settings of
their README commands (``--dense``, the default ``--distribution rank_zipf --rank hard --power 1
--deeplayer 1``, no ``--mask``): votes from the final classifier on the last stage's map (the heads
on stages 2 and 3 are unused at ``--deeplayer 1``), upsampled x2 bilinearly (``align_corners=False``)
on CIFAR and TinyImageNet, not at all on ImageNet; scipy's ``rankdata(-votes, method='min')``; the
target without grad; the KL summed over classes and averaged over the batch. lambda = 0.1 on
CIFAR-100 and ImageNet (1.0 on TinyImageNet and iNat). Their MegEngine code is the same loss. There is
no Self-KD-Lib version. Defaults: lambda 0.1, power 1, upsampling x2 bilinear (the CIFAR setting;
set ``upsample: 1`` for ImageNet-sized maps).

Where this differs from their code: the pixels are classified by the model's own classifier on every
backbone. Their ImageNet MobileNetV2 and DenseNet-121 votes come from an extra, freshly initialised
``nn.Linear`` that no gradient ever reaches (the argmax has none), not from the trained classifier;
their ResNets use the trained ``fc``. The classifier is found as the model's last ``nn.Linear`` from
the head map's width to the number of classes (what ``classify_map`` applies after pooling), and
applied without the dropout that ``mobilenetv2_imagenet`` puts before it: a vote is a prediction,
so it is what ``classify_map`` gives in eval mode (tests/test_zipf_ls.py checks this on every
registered model).

Mixed labels (Mixup, CutMix): the class left out of the target and of the softmax is the mixed label's
largest (y_a when lambda >= 0.5, else y_b); the other mixed class is treated as a wrong class, ranked
by its votes like any other. The ``ce`` term takes the mixed labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.typed_config import EXPONENT, LOSS_WEIGHT, Options, option

from .base import LossTerm, StepOutput
from .registry import register_loss


def rank_min(scores: torch.Tensor) -> torch.Tensor:
    """N x K scores -> N x K ranks, 1 for the largest score of each row; tied scores share the smallest
    rank of their group (scipy's ``rankdata(-scores, method='min')``): rank = 1 + #{strictly larger}."""
    ascending = scores.sort(dim=1).values.contiguous()
    not_larger = torch.searchsorted(ascending, scores.contiguous(), right=True)  # #{j : s_j <= s_c}
    return scores.shape[1] - not_larger + 1


def pixel_votes(
    head_map: torch.Tensor, classify: Callable[[torch.Tensor], torch.Tensor], upsample: int = 1, mode: str = "bilinear"
) -> torch.Tensor:
    """N x D x H x W map -> N x K votes: the map upsampled ``upsample`` times (``mode``, corners not
    aligned), each pixel's D-vector classified by ``classify`` (P x D -> P x K), one vote for its argmax."""
    if upsample > 1:
        head_map = F.interpolate(head_map, scale_factor=upsample, mode=mode, align_corners=False)
    n, d = head_map.shape[:2]
    pixel_logits = classify(head_map.permute(0, 2, 3, 1).reshape(-1, d))
    winners = pixel_logits.argmax(dim=1).view(n, -1)
    votes = torch.zeros(n, pixel_logits.shape[1], device=winners.device)
    return votes.scatter_add_(1, winners, torch.ones_like(winners, dtype=votes.dtype))


def zipf_target(votes: torch.Tensor, targets: torch.Tensor, power: float = 1.0) -> torch.Tensor:
    """N x K: q_c = rank_c^-power over the classes c != y, renormalised, 0 at y; the ranks (``rank_min``
    of the votes) are taken over all K classes, y included."""
    weights = rank_min(votes).to(torch.float32).pow(-power)
    weights = weights.scatter(1, targets[:, None], 0.0)
    return weights / weights.sum(dim=1, keepdim=True)


def non_target_columns(x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """The N x (K - m) columns of ``x`` other than ``classes`` (N x m, distinct per row), in class order
    (m = 1 here: the target; USKD leaves out a mixed label's two classes)."""
    keep = torch.ones_like(x, dtype=torch.int8).scatter(1, classes, 0)
    kept = torch.argsort(keep, dim=1, descending=True, stable=True)[:, : x.shape[1] - classes.shape[1]]
    return x.gather(1, kept)


def zipf_kl(logits: torch.Tensor, target_dist: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """mean_n sum_{c != y} q_c * (log q_c - log softmax(z_{-y})_c), the softmax over the K - 1 logits
    other than the target's; ``target_dist`` (q, N x K, 0 at y) carries no gradient, nor does z_y."""
    log_probs = F.log_softmax(non_target_columns(logits.float(), targets[:, None]), dim=1)
    return F.kl_div(log_probs, non_target_columns(target_dist.detach(), targets[:, None]), reduction="batchmean")


def final_linear(model: nn.Module, in_features: int, out_features: int) -> nn.Linear:
    """The model's classifier layer: its last ``nn.Linear`` from ``in_features`` to ``out_features``."""
    layers = [
        m
        for m in model.modules()
        if isinstance(m, nn.Linear) and (m.in_features, m.out_features) == (in_features, out_features)
    ]
    if not layers:
        raise RuntimeError(
            f"zipf_ls: the model has no nn.Linear({in_features} -> {out_features}) classifier to "
            f"classify the pixels of its {in_features}-channel head map with"
        )
    return layers[-1]


@dataclass
class ZipfLSConfig(Options):
    weight: float = option(
        0.1,
        "lambda, the weight of the Zipf KL term (0.1 on CIFAR-100 and ImageNet, 1.0 on TinyImageNet and iNat)",
        **LOSS_WEIGHT,
    )
    power: float = option(
        1.0, "the Zipf exponent: the non-target class of rank r gets weight r^-power (0: uniform)", **EXPONENT
    )
    upsample: int = option(
        2,
        "the factor the head map is upsampled by before its pixels vote (2 on CIFAR, 1 = none on ImageNet)",
        min=1,
        max=16,
    )
    upsample_mode: str = option("bilinear", "interpolation of the upsampling", choices=("bilinear", "bicubic"))


@register_loss("zipf_ls", ZipfLSConfig)
class ZipfLabelSmoothing(LossTerm):
    def __init__(self, config: ZipfLSConfig):
        super().__init__()
        self.config = config

    def forward(self, step: StepOutput):
        cfg = self.config
        if step.head_map is None or step.model is None:
            raise RuntimeError("the zipf_ls term needs the step's head map and model (StepOutput.head_map, .model)")
        # The class left out: the label, or the largest part of a mixed label.
        targets = step.targets if step.target_probs is None else step.target_probs.argmax(dim=1)
        with torch.no_grad():
            classifier = final_linear(step.model, step.head_map.shape[1], step.logits.shape[1])
            votes = pixel_votes(step.head_map.detach(), classifier, cfg.upsample, cfg.upsample_mode)
            target_dist = zipf_target(votes, targets, cfg.power)
        return {"zipf_ls": cfg.weight * zipf_kl(step.logits, target_dist, targets)}
