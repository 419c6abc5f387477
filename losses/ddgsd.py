"""DDGSD, data-distortion guided self-distillation (Xu & Liu, AAAI 2019).

Every training image comes in two independently augmented views (the ``two_views`` batch plan,
data/plans/two_views.py: the loaders append a second crop and flip of each image, so a batch of B samples is
[view 1; view 2], 2B images, all trained on with gradient, in one forward pass, as Self-KD-Lib concatenates
the views into one forward). Each view's prediction teaches the other's, and the batch means of the two views'
embeddings are pulled together:

    L_ddgsd = T^2 * KL(p_2^T || p_1^T) + T^2 * KL(p_1^T || p_2^T)     (batch means; the teacher side,
                                                                        the other view, detached)
            + mu * (mean(e_1) - mean(e_2))^2

with p_v^T = softmax(z_v / T), and e_v the B x D embedding of view v (``StepOutput.embedding``, the
vector the classifier reads); each mean(e_v) is one scalar, the mean over all B * D entries (not a
per-dimension mean, so this is a first-moment match of the whole batch, not a full MMD). Neither
embedding is detached. The ``ce`` term is the cross-entropy over the 2B images; Self-KD-Lib halves
it, so ``configs/_base_/methods/ddgsd.yaml`` sets ``loss.ce.weight: 0.5``:
total = 0.5 * mean_{2B} CE + L_ddgsd. This term returns no cross-entropy of its own, so listing it
with ``ce`` counts CE once; with mixed labels (Mixup, CutMix) the ``ce`` term uses them, and this
term, which reads no labels, is unchanged (but a batch transform mixes the two views of a sample
with different partners, so the views no longer show the same content: use no batch transform for
the original method).

No code of the authors was found; this follows Self-KD-Lib (winycg/Self-KD-Lib ``methods/ddsgd.py``,
its spelling, with ``main.py`` and ``dataloader/dataloaders.py`` ``TwoCropsTransform``): CE over the
concatenated views divided by 2, ``DistillKL`` (T = 4, batchmean, T^2) in both directions with the
other view detached, and 5e-4 times the squared gap of the embeddings' scalar means, the embedding
being the pooled last-stage vector (their later revision; the earlier one asked the model for its
list of stage maps, which cannot be sliced per view as written). Differences from Self-KD-Lib:
their training accuracy scores the mean of the two views' logits, ours scores each view; both
evaluate one (unaugmented) view at test time. ``train.batch_size`` counts samples, as their
``batch_size`` does: a step forwards twice that many images. Defaults: T 4, KD weight 1, mu 5e-4.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.typed_config import LOSS_WEIGHT, TEMPERATURE, Options, option
from data.plans import TwoViews

from .base import LossTerm, StepOutput
from .kd import kd_loss
from .registry import register_loss


def ddgsd_loss(logits: torch.Tensor, embedding: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The two unweighted parts of DDGSD for a batch [view 1; view 2] of 2B rows: the mutual
    distillation ``T^2 * (KL_bm(sg p_2 || p_1) + KL_bm(sg p_1 || p_2))`` at temperature T (each
    direction's teacher detached), and the squared gap ``(mean(e_1) - mean(e_2))^2`` of the two views'
    embeddings, each mean a scalar over all B x D entries, neither side detached."""
    first, second = TwoViews.views(logits)
    first_embedding, second_embedding = TwoViews.views(embedding)
    mutual = kd_loss(first, second.detach(), temperature) + kd_loss(second, first.detach(), temperature)
    gap = (first_embedding.mean() - second_embedding.mean()) ** 2
    return mutual, gap


@dataclass
class DDGSDConfig(Options):
    weight: float = option(1.0, "weight of the two-way distillation between the views", **LOSS_WEIGHT)
    temperature: float = option(4.0, "softmax temperature T", **TEMPERATURE)
    mean_weight: float = option(
        5.0e-4, "mu, the weight of the squared gap of the views' embedding means", **LOSS_WEIGHT
    )


@register_loss("ddgsd", DDGSDConfig)
class DataDistortionSelfDistillation(LossTerm):
    """Trains on the ``two_views`` plan's whole batch, [view 1; view 2] of the same samples."""

    batch_plan = "two_views"

    def __init__(self, config: DDGSDConfig):
        super().__init__()
        self.config = config

    def forward(self, step: StepOutput):
        mutual, gap = ddgsd_loss(step.logits, step.embedding, self.config.temperature)
        return {"ddgsd_kd": self.config.weight * mutual, "ddgsd_mean": self.config.mean_weight * gap}
