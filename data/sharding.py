"""Which samples each rank sees. One function serves both loaders, so the data order of a run
depends only on (seed, epoch) and the world size, never on the loader implementation.

Training: every epoch draws one permutation from (seed, epoch), shared by all ranks; rank r takes
positions r, r+W, r+2W, ... With batch b per rank, global step s then covers exactly the samples a
single process with batch W*b would see at step s. The permutation is cut to a multiple of W so all
ranks take the same number of steps (at most W-1 samples, different ones each epoch, sit out).
Evaluation: rank r takes samples r, r+W, ...; nothing is padded or repeated, so every test sample is
counted exactly once when the per-rank counts are summed.

A batch plan (data/plans/) may add extra samples to each training sample (its anchor): a same-class
partner, or the sample itself for a second view. ``epoch_indices`` draws them with the order, for every
position of the global order and then sliced like it, so a W-process run pairs its anchors exactly as the
1-process run does, whichever loader reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch


class Stream:
    """The ``epoch_generator`` streams of a run, named in one place so that no two draws share one."""

    ORDER = 0  # the epoch's order of the training samples
    CROPS = 1  # device loader: the anchors' crops and flips
    EXTRA_CROPS = 2  # device loader: the extra samples' crops and flips, one draw per extra sample of an anchor
    WORKERS = 1  # torchvision loader: + rank, its DataLoader workers' seeds (the other loader's CROPS)
    EXTRA_SAMPLES = 2**20  # the batch plan's extra samples (beyond every rank's WORKERS stream)
    AUGMENT = 2**21  # device loader: the per-image seeds of data.augment, for the anchors
    EXTRA_AUGMENT = 2**21 + 1  # ... and for the extra samples


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A CPU generator that depends only on (seed, epoch, stream)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7919 + stream * 104_729) % (2**63))


def rank_positions(num_samples: int, rank: int, world_size: int) -> slice:
    """The positions of an epoch's global order that ``rank`` trains on (see the module docstring)."""
    return slice(rank, num_samples - num_samples % world_size, world_size)


def epoch_order(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    """The epoch's global order of the training samples, which every rank shares."""
    return torch.randperm(num_samples, generator=epoch_generator(seed, epoch, Stream.ORDER))


def train_indices(num_samples: int, seed: int, epoch: int, rank: int, world_size: int) -> torch.Tensor:
    """The samples ``rank`` trains on in ``epoch``, in order."""
    return epoch_order(num_samples, seed, epoch)[rank_positions(num_samples, rank, world_size)]


@dataclass(frozen=True)
class EpochIndices:
    """One rank's training samples of an epoch, in order (its anchors), and the batch plan's extra
    samples of each (count x M; M = 0 where the plan adds none)."""

    anchors: torch.Tensor
    extra: torch.Tensor

    def to(self, device) -> EpochIndices:
        return EpochIndices(self.anchors.to(device), self.extra.to(device))

    def batches(self, batch_size: int) -> Iterator[tuple[slice, torch.Tensor]]:
        """Each batch's span of this rank's positions and its dataset indices: the anchors, then all their
        first extra samples, then all their second ones, ... (``extra_layout``)."""
        for start in range(0, len(self.anchors), batch_size):
            span = slice(start, start + batch_size)
            anchors = self.anchors[span]
            yield span, (torch.cat([anchors, extra_layout(self.extra[span])]) if self.extra.shape[1] else anchors)


def extra_layout(per_anchor: torch.Tensor) -> torch.Tensor:
    """B x M values, one per extra sample of each anchor, in the order a batch holds the extra samples."""
    return per_anchor.T.reshape(-1)


def epoch_indices(labels: torch.Tensor, seed: int, epoch: int, rank: int, world_size: int, plan) -> EpochIndices:
    """What both training loaders read in an epoch: this rank's share of the order, and the extra samples
    that ``plan`` (data/plans/) draws for each position of the global order, sliced the same way."""
    total = len(labels)
    order = epoch_order(total, seed, epoch)
    mine = rank_positions(total, rank, world_size)
    if plan.extra_samples:
        extra = plan.draw_extra(labels, order, epoch_generator(seed, epoch, Stream.EXTRA_SAMPLES))
    else:
        extra = order.new_empty(total, 0)
    return EpochIndices(order[mine], extra[mine])


def eval_indices(num_samples: int, rank: int, world_size: int) -> torch.Tensor:
    return torch.arange(rank, num_samples, world_size)


def num_batches(num_items: int, batch_size: int) -> int:
    return -(-num_items // batch_size)
