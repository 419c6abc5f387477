"""The standard data path: a torchvision ``Dataset`` + ``DataLoader`` workers. Used for datasets
that do not fit in device memory (ImageNet, image folders) and, on request, for in-memory ones.
Shares the sharding of ``data/sharding.py`` with the device-resident loader."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate
from torchvision.transforms import v2

from core.errors import DataError

from .augmentations import stage_transforms
from .registry import BadImage
from .sharding import Stream, epoch_generator, epoch_indices, eval_indices, num_batches


class TensorImageDataset(Dataset):
    """uint8 N x C x H x W images with a per-sample torchvision transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(self.images[index]), self.labels[index]


def small_image_transforms(size: int, mean, std, padding: int, pad_mode: str, hflip: bool, train: bool, augment=()):
    """CIFAR-style pipeline on uint8 tensors: pad + random crop, flip, the uint8 ``augment``ations
    (data/augmentations.py), scale to [0, 1], normalise, the normalised ones; only the last three for test."""
    steps = []
    if train and padding:
        steps.append(v2.RandomCrop(size, padding=padding, padding_mode=pad_mode))
    if train and hflip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps + normalising_steps(mean, std, augment if train else ()))


def normalising_steps(mean, std, augment=()) -> list:
    """uint8 image -> normalised float image, with the ``augment``ations of each stage on either side."""
    return [
        *stage_transforms(augment, "uint8"),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
        *stage_transforms(augment, "normalised"),
    ]


class _BatchSampler(Sampler):
    """The index batches ``batches_fn()`` gives for the current epoch."""

    def __init__(self, batches_fn, length_fn):
        self.batches_fn, self.length_fn = batches_fn, length_fn

    def __iter__(self):
        return iter(self.batches_fn())

    def __len__(self) -> int:
        return self.length_fn()


class IndexedDataset(Dataset):
    """``(image, label, index)``: the training loaders yield each batch's dataset indices too."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return (*self.dataset[index], index)


def collate_readable(batch: list):
    """``default_collate`` of the readable samples, and the unreadable ones (``BadImage``) apart."""
    bad = [sample[0] for sample in batch if isinstance(sample[0], BadImage)]
    good = [sample for sample in batch if not isinstance(sample[0], BadImage)]
    return (default_collate(good) if good else None), bad


class _DeviceIterator:
    """Moves each batch to the device (asynchronously from pinned memory on CUDA). An unreadable image
    stops the run with one line naming the file, or is skipped and remembered (``skipped``) where
    ``skip_bad_images``."""

    def __init__(self, loader: DataLoader, device: torch.device, skip_bad_images: bool = False):
        self.loader, self.device, self.skip_bad_images = loader, device, skip_bad_images
        self.skipped: list[str] = []  # the files skipped so far

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        non_blocking = self.device.type == "cuda"
        for batch, bad in self.loader:
            if bad and not self.skip_bad_images:
                raise DataError(
                    f"unreadable image {bad[0].path} ({bad[0].reason}); remove or replace it, or set "
                    f"data.skip_bad_images=true to skip such files"
                )
            self.skipped += [image.path for image in bad]
            if batch is None:
                continue
            yield tuple(tensor.to(self.device, non_blocking=non_blocking) for tensor in batch)


class TorchTrainLoader(_DeviceIterator):
    """Yields ``(images, labels, indices)``: each batch's anchors, then the extra samples the batch plan
    (data/plans/) draws for them; ``labels`` are the training set's, which the plan may draw from."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        device,
        seed: int,
        plan,
        labels: torch.Tensor,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 4,
        skip_bad_images: bool = False,
    ):
        self.dataset, self.seed, self.rank, self.world_size = dataset, seed, rank, world_size
        self.labels, self.plan = labels, plan
        self.epoch = 1
        self.generator = torch.Generator()
        self.batch_size = batch_size
        device = torch.device(device)
        loader = DataLoader(
            IndexedDataset(dataset),
            batch_sampler=_BatchSampler(self._batches, self.__len__),
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            generator=self.generator,
            persistent_workers=False,
            collate_fn=collate_readable,
        )
        super().__init__(loader, device, skip_bad_images)

    def _batches(self) -> list[list[int]]:
        epoch = epoch_indices(self.labels, self.seed, self.epoch, self.rank, self.world_size, self.plan)
        return [index.tolist() for _, index in epoch.batches(self.batch_size)]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        # Worker augmentation seeds derive from this generator: same (seed, epoch, rank), same epoch.
        self.generator.manual_seed(epoch_generator(self.seed, epoch, Stream.WORKERS + self.rank).initial_seed())

    def __len__(self) -> int:
        return num_batches(len(self.dataset) // self.world_size, self.batch_size)


class TorchEvalLoader(_DeviceIterator):
    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        device,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 4,
        skip_bad_images: bool = False,
    ):
        indices = eval_indices(len(dataset), rank, world_size)
        device = torch.device(device)
        loader = DataLoader(
            torch.utils.data.Subset(dataset, indices.tolist()),
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            collate_fn=collate_readable,
        )
        super().__init__(loader, device, skip_bad_images)
