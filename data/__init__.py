"""Datasets and loaders. ``build_loaders`` picks the device-resident loader for in-memory datasets
(unless ``data.loader: torchvision``) and DataLoader workers otherwise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from core.errors import ConfigError

from . import cifar, digits, folder, synthetic  # noqa: F401  (registers datasets)
from .augmentations import build_augmentations
from .device_loader import DeviceEvalLoader, DeviceTrainLoader
from .plans import BatchPlan
from .plans.plain import PlainPlan
from .registry import DATASETS, FolderData, InMemoryData, build_dataset, register_dataset
from .torch_loader import TensorImageDataset, TorchEvalLoader, TorchTrainLoader, small_image_transforms


@dataclass
class Loaders:
    train: object  # iterable of (images, labels) on the device, with set_epoch(epoch) and len()
    test: object
    num_classes: int
    image_size: int
    num_train: int
    num_test: int


def build_loaders(
    data_config,
    data: "InMemoryData | FolderData",
    batch_size: int,
    eval_batch_size: int,
    device,
    seed: int,
    plan: Optional[BatchPlan] = None,
    rank: int = 0,
    world_size: int = 1,
) -> Loaders:
    """Loaders for one rank; ``batch_size`` and ``eval_batch_size`` are per rank (anchors, where the batch
    ``plan`` (data/plans/; None: plain) adds extra samples to each)."""
    plan = plan if plan is not None else PlainPlan()
    workers = data_config.num_workers
    if isinstance(data, InMemoryData):
        augment = build_augmentations(data_config)  # FolderData's transforms hold theirs (data/folder.py)
        num_train, num_test = len(data.train_labels), len(data.test_labels)
        if data_config.loader in ("auto", "device"):
            train = DeviceTrainLoader(
                data.train_images,
                data.train_labels,
                data.mean,
                data.std,
                batch_size,
                device,
                seed,
                plan,
                rank,
                world_size,
                data_config.padding,
                data_config.pad_mode,
                data_config.hflip,
                augment,
            )
            test = DeviceEvalLoader(
                data.test_images, data.test_labels, data.mean, data.std, eval_batch_size, device, rank, world_size
            )
        else:

            def dataset(images, labels, train):
                transform = small_image_transforms(
                    data.image_size,
                    data.mean,
                    data.std,
                    data_config.padding,
                    data_config.pad_mode,
                    data_config.hflip,
                    train,
                    augment,
                )
                return TensorImageDataset(images, labels, transform)

            train = TorchTrainLoader(
                dataset(data.train_images, data.train_labels, True),
                batch_size,
                device,
                seed,
                plan,
                data.train_labels,
                rank,
                world_size,
                workers,
            )
            test = TorchEvalLoader(
                dataset(data.test_images, data.test_labels, False), eval_batch_size, device, rank, world_size, workers
            )
    else:
        if data_config.loader == "device":
            raise ConfigError(
                f"data.loader=device needs an in-memory dataset; {data_config.name} is read from files "
                "(use data.loader=torchvision or auto)"
            )
        num_train, num_test = len(data.train), len(data.test)
        skip = data_config.skip_bad_images
        labels = torch.as_tensor(data.train.targets, dtype=torch.int64)
        train = TorchTrainLoader(data.train, batch_size, device, seed, plan, labels, rank, world_size, workers, skip)
        test = TorchEvalLoader(data.test, eval_batch_size, device, rank, world_size, workers, skip)
    return Loaders(train, test, data.num_classes, data.image_size, num_train, num_test)


__all__ = ["DATASETS", "FolderData", "InMemoryData", "Loaders", "build_dataset", "build_loaders", "register_dataset"]
