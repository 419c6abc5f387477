"""One training step, split where the trainer may look at the loss before the update.

The trainer and ``scripts/benchmark.py`` both call these, so the benchmark times the very step that
trains. Nothing here reads a value back to the host: on a GPU the step is queued, not waited for.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.utils._pytree import tree_leaves

from data.batch_transforms import apply_batch_transforms
from losses.base import epoch_tensor

from .builder import Experiment
from .network import joined
from .optim import clip_gradients


class Losses(NamedTuple):
    logits: torch.Tensor
    terms: dict[str, torch.Tensor]  # named, weighted scalars, as the loss terms returned them
    total: torch.Tensor
    targets: torch.Tensor  # the labels of the images trained on, as the batch plan composed them


def compute_losses(
    exp: Experiment,
    images: torch.Tensor,
    targets: torch.Tensor,
    epoch: torch.Tensor | int,
    indices: torch.Tensor | None = None,
) -> Losses:
    """The batch plan's composition, the batch transforms, the forward pass of the model (and of the
    teacher, if a term needs one) and every loss term. ``epoch`` (from 1) is best a 0-d tensor on the
    device, made once per epoch (``epoch_tensor``); an int is made one here."""
    parts, targets, indices, batch = exp.plan.compose(images, targets, indices)
    target_probs = None
    if exp.batch_transforms:
        mixed, target_probs = apply_batch_transforms(
            exp.batch_transforms, joined(parts), targets, exp.loaders.num_classes
        )
        parts = mixed.split([part.shape[0] for part in parts])
    parts = tuple(part.contiguous(memory_format=exp.memory_format) for part in parts)
    if not isinstance(epoch, torch.Tensor):
        epoch = epoch_tensor(epoch, parts[0].device)
    mark_batch_dynamic(parts, targets, indices, target_probs, batch)
    with exp.autocast(parts[0].device):
        teacher_logits = None
        if exp.teacher is not None:
            whole = joined(parts)
            mark_batch_dynamic(whole)
            teacher_logits = exp.teacher(whole)
            mark_batch_dynamic(teacher_logits)
        logits, terms = exp.network(parts, targets, epoch, indices, teacher_logits, target_probs, batch)
        total = sum(terms.values())
    return Losses(logits, terms, total, targets)


def mark_batch_dynamic(*inputs) -> None:
    """Mark the first dimension of every tensor in ``inputs`` (nested tuples, lists and dicts) as a batch
    size that varies between calls: a compiled step then compiles once for all batch sizes (a partial
    last batch, DLB's parts) instead of once more for each. Nothing changes for an eager step, and a
    dimension that the graph fixes stays fixed."""
    for tensor in tree_leaves(inputs):
        if isinstance(tensor, torch.Tensor) and tensor.dim() > 0:
            torch._dynamo.maybe_mark_dynamic(tensor, 0)


def apply_gradients(exp: Experiment, total: torch.Tensor) -> None:
    """Backward pass and optimizer update (through the gradient scaler, which is a no-op without fp16)."""
    exp.optimizer.zero_grad(set_to_none=True)
    exp.scaler.scale(total).backward()
    clip_gradients(exp.optimizer, exp.scaler, exp.grad_clip)
    exp.scaler.step(exp.optimizer)
    exp.scaler.update()
