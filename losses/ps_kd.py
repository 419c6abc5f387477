"""PS-KD, progressive self-knowledge distillation (Kim et al., ICCV 2021).

The network's own prediction on each training image in the previous epoch teaches it in this one:

    target_i = (1 - alpha_t) * onehot(y_i) + alpha_t * P[i],   alpha_t = alpha_T * epoch / epochs
    L_ps = mean over the batch of sum_c -target_ic * log softmax(z_i)_c

P[i] is softmax(z_i) (T = 1, detached) from the training forward pass of image i in the previous
epoch (augmented, train mode, the weights before that step's update), as in the authors' code
(lgcnsai/PS-KD-Pytorch ``main.py``, ``loss/pskd_loss.py``); in the first epoch P[i] is the one-hot
label, so the target is the label. alpha_T = 0.8. The term is the whole loss (no separate ``ce``):
``configs/_base_/methods/ps_kd.yaml`` lists it alone. Their protocol is 300 epochs, /10 at 150 and
225; Self-KD-Lib's ``ps_kd.py`` runs the same loss under its 200-epoch one (``configs/cifar100/selfkd``).

P is an N x K buffer of the term on the training device (50,000 x 100 floats, 20 MB, for CIFAR-100),
saved in every checkpoint. Under DDP every rank updates the rows of the samples it trains on and
the rows are all-gathered each step, so every rank holds all of P, as the authors' DDP code does.
(For ImageNet, N x K is 5 GB: not yet supported on the device.)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from core.typed_config import Options, option

from .base import LossTerm, StepOutput, TrainingSetup
from .registry import register_loss


def ps_kd_loss(logits: torch.Tensor, one_hot: torch.Tensor, past: torch.Tensor, alpha: float) -> torch.Tensor:
    """Cross-entropy against (1 - alpha) * onehot + alpha * the past predictions, batch mean."""
    return F.cross_entropy(logits.float(), (1 - alpha) * one_hot + alpha * past)


def gather_from_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` (the same shape on each), concatenated; ``tensor`` itself without DDP."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


@dataclass
class PSKDConfig(Options):
    alpha_T: float = option(0.8, "the weight of the past predictions in the last epoch (it grows linearly "
                                 "from alpha_T / epochs)", min=0, max=1)


@register_loss("ps_kd", PSKDConfig)
class ProgressiveSelfKD(LossTerm):
    def __init__(self, config: PSKDConfig):
        super().__init__()
        self.config = config
        self.epochs = 1
        self.register_buffer("past", torch.zeros(0, 0))  # N x K, made by attach()
        self.register_buffer("seen", torch.zeros(0, dtype=torch.bool))  # rows written at least once

    def attach(self, setup: TrainingSetup) -> None:
        self.epochs = setup.epochs
        self.past = torch.zeros(setup.num_samples, setup.num_classes)
        self.seen = torch.zeros(setup.num_samples, dtype=torch.bool)

    def forward(self, step: StepOutput):
        if step.indices is None:
            raise RuntimeError("the ps_kd term needs the training samples' indices (StepOutput.indices)")
        indices = step.indices
        one_hot = F.one_hot(step.targets, self.past.shape[1]).to(self.past.dtype)
        past = torch.where(self.seen[indices, None], self.past[indices], one_hot)  # epoch 1: the label
        labels = one_hot if step.target_probs is None else step.target_probs.to(one_hot.dtype)  # mixed, if mixed
        loss = ps_kd_loss(step.logits, labels, past, self.config.alpha_T * step.epoch / self.epochs)
        with torch.no_grad():  # what the next epoch reads: this pass's predictions, from every rank
            self.past[gather_from_ranks(indices)] = gather_from_ranks(step.logits.detach().float().softmax(dim=1))
            self.seen[gather_from_ranks(indices)] = True
        return {"ps_kd": loss}
