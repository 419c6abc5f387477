"""A device-resident loader for in-memory datasets: the uint8 images live on the training device and
random crop (with padding), horizontal flip and normalisation are a few batched tensor ops.
No worker processes, no host-to-device copies per step, no host synchronisation.

The augmentation is the torchvision pipeline's (RandomCrop(size, padding, padding_mode) then
RandomHorizontalFlip(0.5) then Normalize): crop offsets are uniform on [0, 2*padding] in each
direction and flips happen with probability 1/2, drawn independently per image. The augmentations
of ``data.augment`` (data/augmentations.py: torchvision transforms, per image, seeded per image) run
after the crop and flip, on the uint8 images or on the normalised ones as each requires.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .augmentations import apply_per_image, draw_seeds
from .sharding import Stream, epoch_generator, epoch_indices, eval_indices, extra_layout, num_batches, rank_positions


def pad_images(images: torch.Tensor, padding: int, mode: str) -> torch.Tensor:
    """Pad uint8 N x C x H x W images once, up front (reflect padding has no uint8 kernel)."""
    if padding == 0:
        return images
    if mode == "constant":
        return F.pad(images, (padding,) * 4)
    return F.pad(images.float(), (padding,) * 4, mode=mode).to(torch.uint8)


def crop_flip(
    padded: torch.Tensor, index: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor, size: int
) -> torch.Tensor:
    """Gather images ``index`` from ``padded``, crop ``size`` x ``size`` at (top, left) and mirror
    where ``flip``, as one gather. Returns uint8 B x C x size x size."""
    _, channels, height, width = padded.shape
    steps = torch.arange(size, device=padded.device)
    rows = (top[:, None] + steps) * width  # B x size
    cols = left[:, None] + torch.where(flip[:, None], size - 1 - steps, steps)
    plane = height * width
    planes = index[:, None] * (channels * plane) + torch.arange(channels, device=padded.device) * plane  # B x C
    # Flat offsets and torch.take: about twice as fast on CPUs as indexing with four broadcast index tensors.
    return torch.take(padded, planes[:, :, None, None] + rows[:, None, :, None] + cols[:, None, None, :])


class Normalizer:
    """uint8 -> float ``(x / 255 - mean) / std`` as one multiply-add."""

    def __init__(self, mean, std, device):
        std = torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std)
        self.shift = -torch.tensor(mean, device=device).view(1, -1, 1, 1) / std

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, images, self.scale)  # promotes uint8 to float in the same kernel


class DeviceTrainLoader:
    """Yields ``(images, labels, indices)`` per batch, ``indices`` the samples' dataset indices: the batch's
    anchors, then the extra samples the batch plan (data/plans/) draws for them, each with crops, flips and
    augmentations of its own."""

    def __init__(
        self,
        images,
        labels,
        mean,
        std,
        batch_size: int,
        device,
        seed: int,
        plan,
        rank: int = 0,
        world_size: int = 1,
        padding: int = 4,
        pad_mode: str = "constant",
        hflip: bool = True,
        augment=(),
    ):
        self.device = torch.device(device)
        self.size = images.shape[-1]
        self.padding, self.hflip = padding, hflip
        self.padded = pad_images(images, padding, pad_mode).to(self.device)
        self.labels = labels.to(self.device)
        self.normalize = Normalizer(mean, std, self.device)
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.plan, self.cpu_labels = plan, labels.cpu()
        self.augment = list(augment)  # data/augmentations.py, in order (uint8 ones first)
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return num_batches(len(self.labels) // self.world_size, self.batch_size)

    def __iter__(self):
        epoch = epoch_indices(self.cpu_labels, self.seed, self.epoch, self.rank, self.world_size, self.plan)
        epoch = epoch.to(self.device)
        extra = epoch.extra.shape[1]
        # Augmentation parameters for the whole epoch at once, on the CPU generator (reproducible on any
        # device). They are drawn for every position of the epoch's global order, which all ranks share,
        # and sliced like the order: each sample gets its own crop and flip, and the same ones whatever
        # the number of ranks, so a W-process run trains on the very images of the 1-process run.
        crops = self._augmentation(Stream.CROPS, copies=1)
        # data.augment: one seed per augmentation and image (len(augment) x copies x count, on the CPU)
        seeds = self._seeds(Stream.AUGMENT, 1)
        if extra:  # the extra samples' own crops, flips and seeds: M draws for each anchor
            extra_crops = self._augmentation(Stream.EXTRA_CROPS, copies=extra)
            extra_seeds = self._seeds(Stream.EXTRA_AUGMENT, extra)
        for span, index in epoch.batches(self.batch_size):
            anchors = len(epoch.anchors[span])
            images = crop_flip(self.padded, index[:anchors], *(values[0, span] for values in crops), self.size)
            image_seeds = seeds[:, 0, span]
            if extra:  # the batch's anchors, then their extra samples (data/sharding.py extra_layout)
                augment = [extra_layout(values[:, span].T) for values in extra_crops]
                images = torch.cat([images, crop_flip(self.padded, index[anchors:], *augment, self.size)])
                image_seeds = torch.cat([image_seeds, extra_seeds[:, :, span].flatten(1)], 1)
            yield self._augment_and_normalize(images, image_seeds), self.labels[index], index

    def _seeds(self, stream: int, copies: int) -> torch.Tensor:
        return draw_seeds(
            (len(self.augment), copies), len(self.labels), self.seed, self.epoch, stream, self.rank, self.world_size
        )

    def _augment_and_normalize(self, images: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """The uint8-stage augmentations, normalisation, then the normalised-stage ones; ``seeds`` holds
        one row per augmentation, one seed per image (on the CPU: reading them is no device sync)."""
        if not self.augment:
            return self.normalize(images)
        normalized = False
        for augmentation, row in zip(self.augment, seeds.tolist()):
            if augmentation.stage == "normalised" and not normalized:
                images, normalized = self.normalize(images), True
            images = apply_per_image(augmentation.transform, images, row)
        return images if normalized else self.normalize(images)

    def _augmentation(self, stream: int, copies: int) -> list[torch.Tensor]:
        """Crop offsets and flips, each ``copies`` x count, for this rank's positions; drawn for every
        position of the epoch's global order from (seed, epoch, stream)."""
        total = len(self.labels)
        generator = epoch_generator(self.seed, self.epoch, stream=stream)
        mine = rank_positions(total, self.rank, self.world_size)
        shape = (copies, total)
        top = torch.randint(0, 2 * self.padding + 1, shape, generator=generator)[:, mine]
        left = torch.randint(0, 2 * self.padding + 1, shape, generator=generator)[:, mine]
        flip = (
            (torch.rand(shape, generator=generator) < 0.5)[:, mine] if self.hflip else torch.zeros_like(top, dtype=bool)
        )
        return [value.to(self.device) for value in (top, left, flip)]


class DeviceEvalLoader:
    def __init__(self, images, labels, mean, std, batch_size: int, device, rank: int = 0, world_size: int = 1):
        self.device = torch.device(device)
        index = eval_indices(len(labels), rank, world_size)
        self.images = images[index].to(self.device)
        self.labels = labels[index].to(self.device)
        self.normalize = Normalizer(mean, std, self.device)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return num_batches(len(self.labels), self.batch_size)

    def __iter__(self):
        for start in range(0, len(self.labels), self.batch_size):
            yield (
                self.normalize(self.images[start : start + self.batch_size]),
                self.labels[start : start + self.batch_size],
            )
