"""Samplers: which other samples join each training sample in its batch, for methods that distil
between samples (CS-KD's same-class pairs, BAKE's same-class groups, DLB's and DDGSD's second views). A
loss term names the sampler it needs (``LossTerm.sampler``); both loaders then append, to every batch of
anchors, the partners the sampler chose for them.

A sampler maps the epoch to a count x M tensor: the M partners of each of this rank's anchors, in the
order of ``train_indices``. Partners are drawn for every position of the epoch's global order from
(seed, epoch) alone and then sliced like the anchors, so they do not depend on the loader, and a
W-process run pairs its anchors exactly as the 1-process run does (``data/sharding.py``).
"""
from __future__ import annotations

import torch

from core.registry import Registry

from .sharding import epoch_generator, rank_positions, train_indices

SAMPLERS = Registry("sampler")  # name -> partners(labels, seed, epoch, rank, world_size, **options) -> count x M
register_sampler = SAMPLERS.register

# epoch_generator streams: 0 the order; 1 and 2 the device loader's augmentation, 1 + rank the
# torchvision loader's worker seeds; the partners' stream lies beyond any rank, and the device loader's
# per-image seeds of data.augment (data/augmentations.py AUGMENT_STREAM, + 1) beyond it.
PARTNER_STREAM = 2**20


def same_class_partner(labels: torch.Tensor, anchors: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """For each anchor, one index drawn uniformly from the samples of its class (itself included)."""
    by_class = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels)
    starts = torch.cumsum(counts, 0) - counts
    classes = labels[anchors]
    offsets = (torch.rand(len(anchors), generator=generator, dtype=torch.float64) * counts[classes]).long()
    return by_class[starts[classes] + offsets.clamp_max(counts[classes] - 1)]


@register_sampler("class_pairs")
def class_pairs(labels: torch.Tensor, seed: int, epoch: int, rank: int, world_size: int) -> torch.Tensor:
    """CS-KD's pairs (alinlab/cs-kd ``PairBatchSampler``): one random sample of the anchor's class."""
    total = len(labels)
    order = train_indices(total, seed, epoch, rank=0, world_size=1)  # the anchor at every position
    partners = same_class_partner(labels, order, epoch_generator(seed, epoch, stream=PARTNER_STREAM))
    return partners[rank_positions(total, rank, world_size)].unsqueeze(1)


@register_sampler("second_view")
def second_view(labels: torch.Tensor, seed: int, epoch: int, rank: int, world_size: int) -> torch.Tensor:
    """DLB's two views: each sample is its own partner, so every batch also holds a second, independently
    augmented view of each of its images."""
    order = train_indices(len(labels), seed, epoch, rank=0, world_size=1)
    return order[rank_positions(len(labels), rank, world_size)].unsqueeze(1)


def other_same_class(labels: torch.Tensor, anchors: torch.Tensor, count: int,
                     generator: torch.Generator) -> torch.Tensor:
    """For each anchor, ``count`` other samples of its class (len(anchors) x count): drawn uniformly
    without replacement from the class less the anchor; with replacement where the class has fewer than
    ``count`` other samples; the anchor itself where it is alone in its class."""
    by_class = torch.argsort(labels, stable=True)
    sizes = torch.bincount(labels)
    starts = torch.cumsum(sizes, 0) - sizes
    place = torch.empty_like(labels)  # each sample's position among the samples of its class
    place[by_class] = torch.arange(len(labels)) - starts[labels[by_class]]
    classes, own = labels[anchors], place[anchors]
    others = sizes[classes] - 1
    replace = others < count
    draws = torch.rand(len(anchors), count, generator=generator, dtype=torch.float64)
    taken = own.unsqueeze(1)  # positions in the class no later draw may take (without replacement)
    for column in range(count):
        pool = torch.where(replace, others, others - column).clamp_min(1)
        pick = (draws[:, column] * pool).long().clamp_max(pool - 1)  # the pick-th position still free:
        with_replacement = pick + (pick >= own)  # skip the anchor only
        for skipped in torch.sort(taken, dim=1).values.T:  # skip every taken position, in ascending order
            pick = pick + (pick >= skipped)
        pick = torch.where(replace, with_replacement, pick)
        taken = torch.cat([taken, pick.unsqueeze(1)], dim=1)
    positions = torch.where((others > 0).unsqueeze(1), taken[:, 1:], own.unsqueeze(1))
    return by_class[starts[classes].unsqueeze(1) + positions]


@register_sampler("same_class")
def same_class(labels: torch.Tensor, seed: int, epoch: int, rank: int, world_size: int,
               count: int = 1) -> torch.Tensor:
    """BAKE's batches (yxgeee/BAKE ``IdentityBatchSampler``): ``count`` other samples of the anchor's class
    (``other_same_class``); the term gives ``count`` (``LossTerm.sampler_options``)."""
    total = len(labels)
    order = train_indices(total, seed, epoch, rank=0, world_size=1)  # the anchor at every position
    drawn = other_same_class(labels, order, count, epoch_generator(seed, epoch, stream=PARTNER_STREAM))
    return drawn[rank_positions(total, rank, world_size)]
