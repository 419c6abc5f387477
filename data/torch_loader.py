"""The standard data path: a torchvision ``Dataset`` + ``DataLoader`` workers. Used for datasets
that do not fit in device memory (ImageNet, image folders) and, on request, for in-memory ones.
Shares the sharding of ``data/sharding.py`` with the device-resident loader."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from .sharding import epoch_generator, eval_indices, num_batches, train_indices


class TensorImageDataset(Dataset):
    """uint8 N x C x H x W images with a per-sample torchvision transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(self.images[index]), self.labels[index]


def small_image_transforms(size: int, mean, std, padding: int, pad_mode: str, hflip: bool, train: bool):
    """CIFAR-style pipeline on uint8 tensors: pad + random crop, flip, scale to [0, 1], normalise."""
    steps = []
    if train and padding:
        steps.append(v2.RandomCrop(size, padding=padding, padding_mode=pad_mode))
    if train and hflip:
        steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


class _IndexSampler(Sampler):
    def __init__(self, indices_fn):
        self.indices_fn = indices_fn

    def __iter__(self):
        return iter(self.indices_fn().tolist())

    def __len__(self) -> int:
        return len(self.indices_fn())


class _DeviceIterator:
    """Moves each batch to the device (asynchronously from pinned memory on CUDA)."""

    def __init__(self, loader: DataLoader, device: torch.device):
        self.loader, self.device = loader, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        non_blocking = self.device.type == "cuda"
        for images, labels in self.loader:
            yield images.to(self.device, non_blocking=non_blocking), labels.to(self.device, non_blocking=non_blocking)


class TorchTrainLoader(_DeviceIterator):
    def __init__(self, dataset: Dataset, batch_size: int, device, seed: int, rank: int = 0, world_size: int = 1,
                 num_workers: int = 4):
        self.dataset, self.seed, self.rank, self.world_size = dataset, seed, rank, world_size
        self.epoch = 1
        self.generator = torch.Generator()
        device = torch.device(device)
        loader = DataLoader(
            dataset, batch_size=batch_size, sampler=_IndexSampler(self._indices), num_workers=num_workers,
            pin_memory=device.type == "cuda", generator=self.generator, drop_last=False,
            persistent_workers=False,
        )
        super().__init__(loader, device)
        self.batch_size = batch_size

    def _indices(self) -> torch.Tensor:
        return train_indices(len(self.dataset), self.seed, self.epoch, self.rank, self.world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        # Worker augmentation seeds derive from this generator: same (seed, epoch, rank), same epoch.
        self.generator.manual_seed(epoch_generator(self.seed, epoch, stream=1 + self.rank).initial_seed())

    def __len__(self) -> int:
        return num_batches(len(self.dataset) // self.world_size, self.batch_size)


class TorchEvalLoader(_DeviceIterator):
    def __init__(self, dataset: Dataset, batch_size: int, device, rank: int = 0, world_size: int = 1,
                 num_workers: int = 4):
        indices = eval_indices(len(dataset), rank, world_size)
        device = torch.device(device)
        loader = DataLoader(
            torch.utils.data.Subset(dataset, indices.tolist()), batch_size=batch_size, shuffle=False,
            num_workers=num_workers, pin_memory=device.type == "cuda",
        )
        super().__init__(loader, device)
