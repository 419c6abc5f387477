"""DLB's batches (Meta-knowledge-Lab/DLB ``dlb.py``): each sample comes in two views; step t trains on view 0
of its new batch B_t and on view 1 of the previous batch B_{t-1}, whose view 0 the previous step predicted.

As the authors run it, the two are forwarded in two passes in train mode, both with gradient, first B_t's
view 0, then B_{t-1}'s view 1: BatchNorm normalises each pass over its own B images and updates its running
statistics once per pass, and the logits kept for the next step are those of B_t's own pass.
``joint_pass: true`` forwards [B_t view 0; B_{t-1} view 1] as one batch instead: fewer, larger kernels
(faster on a GPU), but BatchNorm's statistics then span 2B images and the kept logits come from that joint
pass, which is not the authors' step (a few 1e-3 of the loss apart on a small BN network).

The memory (B_{t-1}'s view 1, labels and indices, and B_t's view-0 logits) carries over from one epoch to
the next; only the run's very first step has none (it then trains on B_t's view 0 alone). It is the plan's
state, per process (each DDP rank keeps its own shard's last batch), saved for every rank in each
checkpoint, so a killed run resumes exactly. ``train.batch_size`` counts the new samples of a step, which
forwards twice that many.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch

from core.typed_config import Options, option

from .base import BatchPlan, Composed
from .registry import register_plan

KEPT = ("images", "targets", "indices")  # of the last batch's view 1; its view 0's logits apart


class LastBatch(NamedTuple):
    """The batch is [B_t view 0; B_{t-1} view 1]; ``teacher_logits`` are the (detached, float) logits that the
    previous step made on B_{t-1}'s view 0, before its update: one row for each of the batch's last rows.
    None at the run's first step, whose batch is B_t's view 0 alone."""

    teacher_logits: Optional[torch.Tensor]


@dataclass
class LastBatchOptions(Options):
    joint_pass: bool = option(
        False,
        "forward the new batch and the last batch's second view as one batch "
        "(faster; BatchNorm statistics then span both, unlike DLB's two passes)",
    )


@register_plan("last_batch", LastBatchOptions)
class LastBatchPlan(BatchPlan):
    extra_samples = 1

    def __init__(self, options: LastBatchOptions):
        super().__init__()
        self.joint_pass = options.joint_pass
        # B_{t-1}: its view 1, labels and indices (set by compose), and its view 0's logits (by complete: an
        # attribute of its own, which a compiled step writes without reading, so that it is not guarded on the
        # sizes of the memory's other tensors)
        self.memory: dict[str, Optional[torch.Tensor]] = dict.fromkeys(KEPT)
        self.logits: Optional[torch.Tensor] = None

    def draw_extra(self, labels, order, generator) -> torch.Tensor:
        return order.unsqueeze(1)  # the second view of each sample

    def compose(self, images, targets, indices) -> Composed:
        """From the loader's [B_t view 0; B_t view 1]: B_t view 0 and B_{t-1} view 1, two parts (one with
        ``joint_pass``); B_t's view 1 is kept for the next step."""
        half = images.shape[0] // 2
        previous = {
            name: value.to(images.device) if value is not None else None  # from a checkpoint: on the CPU
            for name, value in {**self.memory, "logits": self.logits}.items()
        }
        self.memory = {
            "images": images[half:],
            "targets": targets[half:],
            "indices": indices[half:] if indices is not None else None,
        }
        images, targets, indices = images[:half], targets[:half], indices[:half] if indices is not None else None
        if previous["images"] is None:  # the run's first step
            return Composed((images,), targets, indices, LastBatch(None))
        parts = (images, previous["images"])
        targets = torch.cat([targets, previous["targets"]])
        if indices is not None and previous["indices"] is not None:
            indices = torch.cat([indices, previous["indices"]])
        parts = (torch.cat(parts),) if self.joint_pass else parts
        return Composed(parts, targets, indices, LastBatch(previous["logits"]))

    def complete(self, batch: LastBatch, logits, model) -> LastBatch:
        fresh = logits.shape[0] - (batch.teacher_logits.shape[0] if batch.teacher_logits is not None else 0)
        self.logits = logits[:fresh].detach().float()  # of B_t's view 0, from its own pass, before the update
        return batch

    def get_extra_state(self):
        """The memory, on the CPU (checkpoints are gathered from every rank as objects and saved from there)."""
        memory = {**self.memory, "logits": self.logits}
        return {name: value.cpu() for name, value in memory.items() if value is not None}

    def set_extra_state(self, state) -> None:
        self.memory = {name: state.get(name) for name in KEPT}
        self.logits = state.get("logits")
