"""What a batch plan is: how each training step of a run makes the batch it trains on.

A plan owns, for one run:
- which extra samples the loaders draw for each anchor (``extra_samples``, ``draw_extra``: same-class
  partners, the sample itself for a second view; none for most methods), which follow the anchors in the
  loader's batch (data/sharding.py ``EpochIndices.batches``);
- how the device batch is composed from the loader's (``compose``: split off the partners, mix pairs, take
  the last batch's second view), and in how many parts it is forwarded (each part a forward pass of its own:
  BatchNorm normalises each with its own statistics);
- what it adds once the model has run (``complete``: e.g. the partners' logits from a pass of their own);
- any state it carries from step to step (DLB's last batch): the plan's ``state_dict``, which every
  checkpoint keeps for every DDP rank (each rank holds its own shard's).

The step hands the loss terms the plan's typed batch (``StepOutput.batch``): a NamedTuple of named
tensors, one type per plan. A loss term names the plan it needs (``LossTerm.batch_plan``); a run has one
plan, its options in ``batch.<plan>``.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import torch
import torch.nn as nn


class Composed(NamedTuple):
    """What a step trains on: ``parts`` forwarded in passes of their own and their outputs concatenated in
    order, the labels and dataset indices of their rows in that order, and the plan's typed ``batch``."""

    parts: tuple[torch.Tensor, ...]
    targets: torch.Tensor
    indices: Optional[torch.Tensor]
    batch: Any


class BatchPlan(nn.Module):
    """Base class of the registered plans (``register_plan``); a subclass takes its options dataclass."""

    #: extra samples the loaders draw for each anchor (M): the batch holds B anchors, then B x M samples
    extra_samples: int = 0
    #: batch transforms (data/batch_transforms.py) that would undo what the plan composes: refused with it
    refuses_batch_transforms: tuple[str, ...] = ()

    def __init__(self, options=None):
        super().__init__()

    def draw_extra(self, labels: torch.Tensor, order: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The extra samples of the anchor at each position of an epoch's global ``order``: len(order) x M
        dataset indices, drawn from ``generator`` alone (data/sharding.py slices them per rank)."""
        raise NotImplementedError

    def compose(self, images: torch.Tensor, targets: torch.Tensor, indices: Optional[torch.Tensor]) -> Composed:
        """The step's batch, from the loader's (on the device, before the batch transforms)."""
        raise NotImplementedError

    def complete(self, batch, logits: torch.Tensor, model: nn.Module):
        """The typed batch the loss terms read, once the model has produced ``logits`` for the composed
        batch (inside the trained network: under DDP and ``torch.compile`` with it)."""
        return batch
