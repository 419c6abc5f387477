"""One training step, split where the trainer may look at the loss before the update.

The trainer and ``scripts/benchmark.py`` both call these, so the benchmark times the very step that
trains. Nothing here reads a value back to the host: on a GPU the step is queued, not waited for.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from data.batch_transforms import apply_batch_transforms

from .builder import Experiment


class Losses(NamedTuple):
    logits: torch.Tensor
    terms: dict[str, torch.Tensor]  # named, weighted scalars, as the loss terms returned them
    total: torch.Tensor
    targets: torch.Tensor  # the labels of the images trained on (the loader's, less what terms set aside)


def compute_losses(exp: Experiment, images: torch.Tensor, targets: torch.Tensor, epoch: int,
                   indices: torch.Tensor | None = None) -> Losses:
    """The terms' batch composition, the batch transforms, the forward pass of the model (and of the
    teacher, if a term needs one) and every loss term."""
    extras = {}
    for term in exp.terms:  # a method's own batch composition (e.g. CS-KD sets its partners aside)
        images, targets, indices, extra = term.compose_batch(images, targets, indices)
        extras.update(extra)
    target_probs = None
    if exp.batch_transforms:
        images, target_probs = apply_batch_transforms(exp.batch_transforms, images, targets, exp.loaders.num_classes)
    images = images.contiguous(memory_format=exp.memory_format)
    with exp.autocast(images.device):
        teacher_logits = exp.teacher(images) if exp.teacher is not None else None
        logits, terms = exp.network(images, targets, epoch, indices, teacher_logits, target_probs, extras)
        total = sum(terms.values())
    return Losses(logits, terms, total, targets)


def apply_gradients(exp: Experiment, total: torch.Tensor) -> None:
    """Backward pass and optimizer update (through the gradient scaler, which is a no-op without fp16)."""
    exp.optimizer.zero_grad(set_to_none=True)
    exp.scaler.scale(total).backward()
    exp.scaler.step(exp.optimizer)
    exp.scaler.update()
