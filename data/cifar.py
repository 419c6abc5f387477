"""CIFAR-10 and CIFAR-100 through torchvision, kept in memory as uint8 tensors."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision import datasets

from core.errors import DataError

from .registry import InMemoryData, check_in_memory_size, normalisation, register_dataset

_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
_CLASSES = {
    "cifar10": (datasets.CIFAR10, "cifar-10-batches-py", 10),
    "cifar100": (datasets.CIFAR100, "cifar-100-python", 100),
}


def _load(name: str, data_config) -> InMemoryData:
    dataset_class, folder, num_classes = _CLASSES[name]
    check_in_memory_size(data_config, 60_000, 32, "data.padding")  # 50,000 + 10,000 images of 32 x 32
    root = Path(data_config.root).expanduser()
    try:
        train = dataset_class(str(root), train=True, download=data_config.download)
        test = dataset_class(str(root), train=False, download=data_config.download)
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted"
        raise DataError(
            f"{name} not found in {root / folder} ({error}); set data.download=true to fetch it (needs a network) "
            f"or put the extracted '{folder}' folder under data.root={root}"
        ) from None
    except OSError as error:  # download attempted without a network
        raise DataError(
            f"{name} download to {root} failed ({error}); put the extracted '{folder}' folder there"
        ) from None
    mean, std = normalisation(data_config, *_STATS[name])
    return InMemoryData(
        train_images=_to_tensor(train.data),
        train_labels=torch.as_tensor(train.targets, dtype=torch.int64),
        test_images=_to_tensor(test.data),
        test_labels=torch.as_tensor(test.targets, dtype=torch.int64),
        num_classes=num_classes,
        mean=mean,
        std=std,
    )


def _to_tensor(images_nhwc) -> torch.Tensor:
    return torch.from_numpy(images_nhwc).permute(0, 3, 1, 2).contiguous()


@register_dataset("cifar10")
def cifar10(data_config) -> InMemoryData:
    return _load("cifar10", data_config)


@register_dataset("cifar100")
def cifar100(data_config) -> InMemoryData:
    return _load("cifar100", data_config)
