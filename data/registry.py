"""Dataset registry. A builder reads the ``data`` config and returns ``InMemoryData`` (uint8 image
tensors, usable by the device-resident loader) or ``FolderData`` (torchvision datasets with their
own transforms, read by DataLoader workers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch
from torch.utils.data import Dataset

from core.errors import ConfigError, DataError, shown
from core.registry import Registry


@dataclass
class InMemoryData:
    train_images: torch.Tensor  # uint8, N x 3 x H x W
    train_labels: torch.Tensor  # int64, N
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]  # in [0, 1] units
    std: tuple[float, ...]

    @property
    def image_size(self) -> int:
        return self.train_images.shape[-1]


@dataclass(frozen=True)
class BadImage:
    """A ``FolderData`` sample whose file cannot be decoded; the loader reports or skips it."""

    path: str
    reason: str


@dataclass
class FolderData:
    train: Dataset  # yields (normalised float image or BadImage, label), augmentation included
    test: Dataset
    num_classes: int
    image_size: int


DatasetData = Union[InMemoryData, FolderData]
DATASETS = Registry("dataset")  # name -> builder(data_config) -> DatasetData
register_dataset = DATASETS.register


MAX_IN_MEMORY_BYTES = 2**30  # the uint8 pixels of an in-memory dataset, padded as the device loader keeps them


def check_in_memory_size(data_config, count: int, image_size: int, hint: str) -> None:
    """Refuse, before anything is allocated, an in-memory dataset of ``count`` images whose uint8 pixels, at
    ``image_size`` and padded by ``data.padding`` on each side, would pass ``MAX_IN_MEMORY_BYTES``; ``hint``
    names the options that make it smaller."""
    side = image_size + 2 * data_config.padding
    size = count * 3 * side * side
    if size > MAX_IN_MEMORY_BYTES:
        raise ConfigError(
            f"data.name={data_config.name}: {count} images of {side}x{side} pixels ({image_size} "
            f"padded by data.padding={data_config.padding}) would take "
            f"{size / 2**30:.1f} GiB of memory, more than the {MAX_IN_MEMORY_BYTES / 2**30:g} GiB an "
            f"in-memory dataset may; lower {hint}"
        )


def build_dataset(data_config) -> DatasetData:
    """The dataset ``data.name`` names; one of fewer than two classes is refused (every prediction would be
    right: a run would "finish" at 100% top-1 and mean nothing)."""
    data = DATASETS.lookup(data_config.name)(data_config)
    if data.num_classes < 2:
        folders = isinstance(data, FolderData)
        where = f" under data.root={data_config.root}" if folders else ""
        fix = "add a folder of images for each other class" if folders else "choose data with two classes or more"
        raise DataError(
            f"{data_config.name}: the data{where} has {data.num_classes} class, and classification "
            f"needs at least two: {fix}"
        )
    return data


def normalisation(data_config, default_mean, default_std) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The config's mean/std if given, else the dataset's own."""
    mean = tuple(data_config.mean) if data_config.mean is not None else tuple(default_mean)
    std = tuple(data_config.std) if data_config.std is not None else tuple(default_std)
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ConfigError(
            f"data.mean and data.std need 3 values each (std > 0), got {shown(list(mean))} and {shown(list(std))}"
        )
    return mean, std


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units."""
    pixels = images.float().div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    return tuple(pixels.mean(1).tolist()), tuple(pixels.std(1).tolist())
