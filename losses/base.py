"""What a loss term sees and returns.

A method is a list of loss terms. Each term reads the ``StepOutput`` of one training step and returns
named, already-weighted scalars; the trainer adds them up and logs each name. Adding a method means
adding a file with a registered term, never a branch in the training loop.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
import torch.nn as nn


@dataclass(frozen=True)
class TrainingSetup:
    """What a term may need to know of the run before it trains (``LossTerm.attach``)."""
    num_samples: int  # training-set size (for per-sample state)
    num_classes: int
    epochs: int
    feature_shapes: tuple[tuple[int, int, int], ...]  # the model's stage features, C x H x W, shallow to deep


def epoch_tensor(epoch: int, device: torch.device) -> torch.Tensor:
    """The epoch as a step takes it (``StepOutput.epoch``): a 0-d float tensor on the device."""
    return torch.tensor(float(epoch), device=device)


@dataclass
class StepOutput:
    logits: torch.Tensor
    feats: list[torch.Tensor]
    targets: torch.Tensor
    # Counted from 1, as in docs/METHOD.md's warm-up weight: a 0-d float tensor (an int is made one), so that
    # a compiled step takes it as an input rather than compiling again for every epoch
    epoch: torch.Tensor
    teacher_logits: Optional[torch.Tensor] = None
    # N x K label distributions where a batch transform (Mixup, CutMix) mixed the labels, else None:
    # ``targets`` stay the hard labels of the unmixed images (data/batch_transforms.py)
    target_probs: Optional[torch.Tensor] = None
    # What terms set aside in ``compose_batch`` (e.g. CS-KD's partner images), by name
    extras: dict[str, Any] = field(default_factory=dict)
    # The model as the step runs it, for a term's extra forward passes (e.g. under torch.no_grad)
    model: Optional[Callable] = None
    # The dataset indices of the samples trained on (training steps), for terms with per-sample state
    indices: Optional[torch.Tensor] = None
    # The N x D x H x W map the model's classifier pools into ``logits`` (models/layers.py ``Backbone``):
    # the last stage's output after any head block; ``model.classify_map`` classifies such a map
    head_map: Optional[torch.Tensor] = None

    def __post_init__(self):
        if not isinstance(self.epoch, torch.Tensor):
            self.epoch = epoch_tensor(self.epoch, self.logits.device)

    @property
    def labels(self) -> torch.Tensor:
        """What a cross-entropy is taken against: the mixed label distributions where a batch transform
        made them, else the hard labels."""
        return self.targets if self.target_probs is None else self.target_probs

    @property
    def embedding(self) -> torch.Tensor:
        """The N x D vector the classifier reads: the pooled ``head_map``."""
        return self.head_map.mean(dim=(2, 3))


class LossTerm(nn.Module):
    """Base class of registered loss terms. Subclasses take their config dataclass."""

    #: the trainer builds and runs a teacher only when an active term sets this
    requires_teacher: bool = False
    #: the data/samplers.py sampler whose partners the loaders append to every batch, if the term needs one
    sampler: Optional[str] = None
    #: keyword options the sampler is called with (BAKE's number of partners per anchor)
    sampler_options: Mapping[str, Any] = MappingProxyType({})
    #: whether the term's state differs between DDP ranks (DLB's last batch): the checkpoint then keeps
    #: every rank's ``state_dict()``, and a resume needs the same number of processes
    per_rank_state: bool = False
    #: batch transforms (data/batch_transforms.py) that would undo what the term's own batch composition
    #: relies on (MixSKD's clean/mixed pairs): the builder refuses a config listing them with the term
    refuses_batch_transforms: tuple[str, ...] = ()

    def attach(self, setup: TrainingSetup) -> None:
        """Called once by the builder, before the optimizer is made, for a term with state of its own:
        per-sample buffers (PS-KD) or parameters (BYOT's heads), which the optimizer then trains.
        Its parameters and buffers are saved in every checkpoint, never in the exported model."""

    def compose_batch(self, images: torch.Tensor, targets: torch.Tensor, indices: Optional[torch.Tensor]):
        """What the step trains on, from the loader's batch: ``(images, targets, indices, extras)``. The
        default trains on the whole batch; a term with a sampler splits off the partners into ``extras``.
        ``images`` may be a tuple of parts, which the network forwards in separate passes (each with its own
        BatchNorm statistics: DLB, as its authors run it); ``targets`` and ``indices`` then cover the parts
        in order."""
        return images, targets, indices, {}

    def check_features(self, feature_shapes: Sequence[tuple[int, int, int]]) -> None:
        """Raise ``ConfigError`` if the term's options do not fit the model, whose stage features have
        these C x H x W shapes (shallow to deep); called by the builder before anything is written."""

    def forward(self, step: StepOutput) -> dict[str, torch.Tensor]:
        raise NotImplementedError
