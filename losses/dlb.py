"""DLB, self-distillation from the last mini-batch (Shen et al., CVPR 2022).

Every sample comes in two views (two independent augmentations: ``data/samplers.py`` ``second_view``).
Step t trains on view 0 of its new batch B_t together with view 1 of the previous batch B_{t-1}; the
predictions that step t-1 made on view 0 of B_{t-1} (with the weights before its update) teach the
network's predictions on their view 1:

    L_dlb = T^2 * KL(softmax(z_{t-1}(B_{t-1}, view 0) / T) || softmax(z_t(B_{t-1}, view 1) / T)),  batch mean

and the ``ce`` term is the cross-entropy over all 2B images of the step. This follows the authors'
code (Meta-knowledge-Lab/DLB ``dlb.py``) down to how it forwards the step: two forward passes in train
mode, both with gradient, first B_t's view 0, then B_{t-1}'s view 1 (the network forwards the two parts
of the composed batch separately: ``LossTerm.compose_batch``), so BatchNorm normalises each pass over
its own B images and updates its running statistics once per pass, and the logits kept as the next
step's teacher are those of B_t's own pass. Their CE is the mean over the concatenation of both
passes' outputs (a smaller last batch of an epoch weighs less, as here). ``joint_pass: true`` forwards
[B_t view 0; B_{t-1} view 1] as one batch instead: fewer, larger kernels (faster on a GPU), but
BatchNorm's statistics are then taken over 2B images and the kept logits come from that joint pass,
which is not the authors' step (a few 1e-3 of the loss apart on a small BN network). The memory of the
last batch carries over from one epoch to the next, and only the run's very first step has no previous
batch (then the step trains on B_t's view 0 alone, with CE only). Their code gives T and alpha no
defaults; the paper's T = 3, alpha = 1 are used here. ``train.batch_size`` counts the new samples of a
step, which forwards twice that many.

The memory (the last batch's view 1, labels, indices and logits) is state across steps; it lives in
the term, per process (each DDP rank keeps its own shard's last batch), and goes to the checkpoint
through ``get_extra_state``, every rank's own (``per_rank_state``), so a killed run resumes exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from core.typed_config import LOSS_WEIGHT, TEMPERATURE, Options, option

from .base import LossTerm, StepOutput
from .kd import kd_loss
from .registry import register_loss

KEPT = ("images", "targets", "indices")  # of the last batch's view 1; its view 0's logits apart


@dataclass
class DLBConfig(Options):
    weight: float = option(1.0, "alpha, the weight of the last-mini-batch distillation", **LOSS_WEIGHT)
    temperature: float = option(3.0, "softmax temperature T", **TEMPERATURE)
    joint_pass: bool = option(False, "forward the new batch and the last batch's second view as one batch "
                                     "(faster; BatchNorm statistics then span both, unlike the authors' two "
                                     "passes)")


@register_loss("dlb", DLBConfig)
class LastMiniBatchKD(LossTerm):
    sampler = "second_view"
    per_rank_state = True

    def __init__(self, config: DLBConfig):
        super().__init__()
        self.config = config
        # B_{t-1}: its view 1, labels and indices (set by compose_batch), and its view 0's logits (by forward;
        # an attribute of its own, which a compiled step writes without reading, so that it is not guarded on
        # the sizes of the memory's other tensors)
        self.memory: dict[str, Optional[torch.Tensor]] = dict.fromkeys(KEPT)
        self.logits: Optional[torch.Tensor] = None

    def compose_batch(self, images: torch.Tensor, targets: torch.Tensor, indices):
        """From the loader's [B_t view 0; B_t view 1]: train on B_t view 0 and B_{t-1} view 1, two parts
        forwarded separately (one batch with ``joint_pass``), and keep B_t's view 1 for the next step."""
        half = images.shape[0] // 2
        previous = {name: value.to(images.device) if value is not None else None  # from a checkpoint: on the CPU
                    for name, value in {**self.memory, "logits": self.logits}.items()}
        self.memory = {"images": images[half:], "targets": targets[half:],
                       "indices": indices[half:] if indices is not None else None}
        images, targets, indices = images[:half], targets[:half], indices[:half] if indices is not None else None
        if previous["images"] is None:  # the run's first step
            return images, targets, indices, {}
        parts = (images, previous["images"])
        targets = torch.cat([targets, previous["targets"]])
        if indices is not None and previous["indices"] is not None:
            indices = torch.cat([indices, previous["indices"]])
        images = torch.cat(parts) if self.config.joint_pass else parts
        return images, targets, indices, {"dlb_teacher_logits": previous["logits"]}

    def forward(self, step: StepOutput):
        teacher = step.extras.get("dlb_teacher_logits")
        fresh = step.logits.shape[0] - (teacher.shape[0] if teacher is not None else 0)
        self.logits = step.logits[:fresh].detach().float()  # of B_t's view 0, from its own pass, before the update
        if teacher is None:  # the run's first step: nothing to distil from yet (a zero in the graph, so that
            return {"dlb": step.logits[:0].sum()}  # a step of dlb alone still has a gradient, of zeros)
        return {"dlb": self.config.weight * kd_loss(step.logits[fresh:], teacher, self.config.temperature)}

    def get_extra_state(self):
        """The memory, on the CPU (checkpoints are gathered from every rank as objects and saved from there)."""
        memory = {**self.memory, "logits": self.logits}
        return {name: value.cpu() for name, value in memory.items() if value is not None}

    def set_extra_state(self, state) -> None:
        self.memory = {name: state.get(name) for name in KEPT}
        self.logits = state.get("logits")
