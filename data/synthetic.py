"""A procedurally generated, learnable image-classification dataset for tests and benchmarks.

Each class owns a smooth random colour pattern; an image is its class pattern at a random shift,
with random contrast and pixel noise on top. Classes are separable by a CNN but not by a single pixel,
so accuracy well above chance shows that training works. The data depend only on the data options
(never on the experiment seed): the same config always sees the same dataset.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .registry import InMemoryData, channel_stats, check_in_memory_size, normalisation, register_dataset

_DATA_SEED = 12345


def _make_split(prototypes: torch.Tensor, count: int, generator: torch.Generator):
    num_classes, _, size, _ = prototypes.shape
    labels = torch.randint(num_classes, (count,), generator=generator)
    shifts = torch.randint(-size // 8, size // 8 + 1, (count, 2), generator=generator)
    images = torch.empty(count, 3, size, size)
    for index in range(count):  # shifting rolls the pattern, keeping it whole
        dy, dx = shifts[index].tolist()
        images[index] = torch.roll(prototypes[labels[index]], shifts=(dy, dx), dims=(1, 2))
    contrast = 0.6 + 0.8 * torch.rand(count, 1, 1, 1, generator=generator)
    noise = 0.35 * torch.randn(count, 3, size, size, generator=generator)
    images = 0.5 + 0.25 * (contrast * images + noise)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8), labels


@register_dataset("synthetic")
def synthetic(data_config) -> InMemoryData:
    check_in_memory_size(
        data_config,
        data_config.num_train + data_config.num_test,
        data_config.image_size,
        "data.image_size, data.padding, data.num_train or data.num_test",
    )
    generator = torch.Generator().manual_seed(_DATA_SEED)
    size, num_classes = data_config.image_size, data_config.num_classes
    coarse = torch.randn(num_classes, 3, 4, 4, generator=generator)
    prototypes = F.interpolate(coarse, size=size, mode="bicubic", align_corners=False)
    prototypes = prototypes / prototypes.flatten(1).std(dim=1).view(-1, 1, 1, 1)
    train_images, train_labels = _make_split(prototypes, data_config.num_train, generator)
    test_images, test_labels = _make_split(prototypes, data_config.num_test, generator)
    mean, std = normalisation(data_config, *channel_stats(train_images))
    return InMemoryData(train_images, train_labels, test_images, test_labels, num_classes, mean, std)
