"""Which samples each rank sees. One function serves both loaders, so the data order of a run
depends only on (seed, epoch) and the world size, never on the loader implementation.

Training: every epoch draws one permutation from (seed, epoch), shared by all ranks; rank r takes
positions r, r+W, r+2W, ... With batch b per rank, global step s then covers exactly the samples a
single process with batch W*b would see at step s. The permutation is cut to a multiple of W so all
ranks take the same number of steps (at most W-1 samples, different ones each epoch, sit out).
Evaluation: rank r takes samples r, r+W, ...; nothing is padded or repeated, so every test sample is
counted exactly once when the per-rank counts are summed.
"""
from __future__ import annotations

import torch


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A CPU generator that depends only on (seed, epoch, stream)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7919 + stream * 104_729) % (2**63))


def rank_positions(num_samples: int, rank: int, world_size: int) -> slice:
    """The positions of an epoch's global order that ``rank`` trains on (see the module docstring)."""
    return slice(rank, num_samples - num_samples % world_size, world_size)


def train_indices(num_samples: int, seed: int, epoch: int, rank: int, world_size: int) -> torch.Tensor:
    permutation = torch.randperm(num_samples, generator=epoch_generator(seed, epoch))
    return permutation[rank_positions(num_samples, rank, world_size)]


def eval_indices(num_samples: int, rank: int, world_size: int) -> torch.Tensor:
    return torch.arange(rank, num_samples, world_size)


def num_batches(num_items: int, batch_size: int) -> int:
    return -(-num_items // batch_size)
