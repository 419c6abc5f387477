"""BAKE, self-distillation with batch knowledge ensembling (Ge et al., 2021).

Each training sample (anchor) comes with M other samples of its own class (the ``same_class`` batch plan,
data/plans/same_class.py, with ``batch.same_class.partners`` M), and the whole batch, anchors and partners,
trains with gradient, in one forward pass, as the authors' ``train.py`` forwards it (BatchNorm's statistics
span anchors and partners). The soft target of every image is an ensemble of the whole batch's softened
predictions, weighted by how alike the images' embeddings are, and propagated through the batch:

    e^ = e / ||e||                                  (e: the N x D embedding, ``StepOutput.embedding``)
    A  = row-softmax(e^ e^T - 1e9 I)                (affinity to the other images; no temperature)
    q  = (1 - omega) (I - omega A)^-1 p^T           (p^T = softmax(z / T), N x K; no gradient)
    L_bake = T^2 * KL(q || p^T),  batch mean

q is the fixed point of q = omega A q + (1 - omega) p^T, i.e. (1 - omega) sum_t (omega A)^t p^T: each row
a convex mix of the batch's predictions (rows sum to 1). ``I - omega A`` is strictly diagonally dominant
for omega < 1 (unit diagonal, off-diagonal rows summing to omega), so it is always invertible; q comes
from ``torch.linalg.solve_ex`` (a solve, not an explicit inverse; no error check, so no host sync), in
float32 with autocast off, under ``torch.no_grad``: nothing flows back through q or the affinity.
The total is CE over the whole batch (the ``ce`` term; with mixed labels from a batch transform it uses
them, while this term reads no labels and ensembles the mixed images' predictions) plus lambda * L_bake.

This follows the authors' code (yxgeee/BAKE ``small_scale/train.py`` ``knowledge_ensemble``, ``KDLoss``,
and ``datasets.py`` ``IdentityBatchSampler``): the features are the pooled last-stage vector the
classifier reads, the affinity has no temperature, the ensemble uses p at the distillation temperature,
and the KL is a sum over classes divided by the batch size, times T^2. Their sampler draws the M partners
from the anchor's class without the anchor, without replacement (with replacement when the class has
fewer than M other samples). Defaults, their CIFAR-100 setting: T 4, omega 0.5, M 3, lambda 1; their
batch of 128 images is 32 anchors x 4, and ``train.batch_size`` counts anchors here too (a step forwards
(M + 1) x ``train.batch_size`` images). Self-KD-Lib (``methods/bake.py``) computes the same loss but keeps
its batch of 128 as anchors (512 images a step) and weight decay 5e-4; the authors use 1e-4 and /10 at
50% and 75% of training. Under DDP each process ensembles its own share of the batch (its anchors and
their partners, who travel with them), as the authors' small-scale code ensembles one GPU's batch; their
ImageNet code gathers the ensemble across GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.typed_config import LOSS_WEIGHT, TEMPERATURE, Options, option

from .base import LossTerm, StepOutput
from .registry import register_loss


def knowledge_ensemble(embedding: torch.Tensor, probs: torch.Tensor, omega: float) -> torch.Tensor:
    """The batch's ensembled soft targets ``q = (1 - omega) (I - omega A)^-1 probs`` (N x K, rows summing to
    one), with ``A = row-softmax(e^ e^T - 1e9 I)`` the affinity of the L2-normalised embeddings. Computed
    without gradient, in float32."""
    with torch.no_grad(), torch.autocast(embedding.device.type, enabled=False):
        unit = F.normalize(embedding.detach().float(), dim=1)
        count = unit.shape[0]
        eye = torch.eye(count, device=unit.device, dtype=unit.dtype)
        affinity = torch.softmax(unit @ unit.T - 1e9 * eye, dim=1)
        ensembled, _ = torch.linalg.solve_ex(eye - omega * affinity, probs.detach().float(), check_errors=False)
        return (1 - omega) * ensembled


def bake_loss(logits: torch.Tensor, embedding: torch.Tensor, temperature: float, omega: float) -> torch.Tensor:
    """``T^2 * KL_bm(q || softmax(logits / T))`` with q the ``knowledge_ensemble`` of the batch's own
    softened predictions (detached) under the affinity of its embeddings."""
    log_probs = F.log_softmax(logits.float() / temperature, dim=1)
    targets = knowledge_ensemble(embedding, log_probs.detach().exp(), omega)
    return F.kl_div(log_probs, targets, reduction="batchmean") * temperature**2


@dataclass
class BAKEConfig(Options):
    weight: float = option(1.0, "lambda, the weight of the batch-ensemble distillation", **LOSS_WEIGHT)
    temperature: float = option(4.0, "softmax temperature T", **TEMPERATURE)
    omega: float = option(0.5, "omega, the weight of the propagated batch knowledge in the ensemble", min=0, below=1)


@register_loss("bake", BAKEConfig)
class BatchKnowledgeEnsembling(LossTerm):
    """Trains on the plan's whole batch, anchors and partners alike."""

    batch_plan = "same_class"

    def __init__(self, config: BAKEConfig):
        super().__init__()
        self.config = config

    def forward(self, step: StepOutput):
        loss = bake_loss(step.logits, step.embedding, self.config.temperature, self.config.omega)
        return {"bake": self.config.weight * loss}
