"""What a loss term sees and returns.

A method is a list of loss terms. Each term reads the ``StepOutput`` of one training step and returns
named, already-weighted scalars; the trainer adds them up and logs each name. Adding a method means
adding a file with a registered term, never a branch in the training loop. What the step trains on
(partners, second views, mixed pairs, the last batch) is the run's batch plan's (data/plans/): a term
names the plan it needs and reads its typed batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn as nn

from data.plans import Plain


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
    # The batch plan's typed batch (data/plans/): what it composed beyond the images, e.g. CS-KD's partners'
    # logits (``ClassPairs``) or DLB's last-batch teacher (``LastBatch``); ``Plain()`` for a plain batch
    batch: Any = field(default_factory=Plain)
    # The model as the step runs it, for a term that reads its classifier (e.g. Zipf's LS)
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
    #: the batch plan (data/plans/) the term needs, whose typed batch it reads (``StepOutput.batch``); None:
    #: the term works on any plan's batch
    batch_plan: Optional[str] = None

    def attach(self, setup: TrainingSetup) -> None:
        """Called once by the builder, before the optimizer is made, for a term with state of its own:
        per-sample buffers (PS-KD) or parameters (BYOT's heads), which the optimizer then trains.
        Its parameters and buffers are saved in every checkpoint, never in the exported model."""

    def check_features(self, feature_shapes: Sequence[tuple[int, int, int]]) -> None:
        """Raise ``ConfigError`` if the term's options do not fit the model, whose stage features have
        these C x H x W shapes (shallow to deep); called by the builder before anything is written."""

    def forward(self, step: StepOutput) -> dict[str, torch.Tensor]:
        raise NotImplementedError
