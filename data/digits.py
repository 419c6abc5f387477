"""scikit-learn's bundled handwritten digits (1,797 real 8x8 images, 10 classes), offline.

Upsampled bilinearly to ``data.image_size`` and repeated over 3 channels, so CIFAR models run on it
unchanged. The train/test split is fixed (80/20, stratified by a fixed permutation), whatever the seed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .registry import InMemoryData, channel_stats, check_in_memory_size, normalisation, register_dataset

_SPLIT_SEED = 20220101
_TEST_FRACTION = 0.2
_IMAGES = 1797


@register_dataset("digits")
def digits(data_config) -> InMemoryData:
    from sklearn.datasets import load_digits

    check_in_memory_size(data_config, _IMAGES, data_config.image_size, "data.image_size or data.padding")
    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # N x 1 x 8 x 8 in [0, 1]
    images = F.interpolate(images, size=data_config.image_size, mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)

    generator = torch.Generator().manual_seed(_SPLIT_SEED)
    test_index, train_index = [], []
    for label in range(10):  # stratified: 20% of every class goes to the test split
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        cut = round(len(members) * _TEST_FRACTION)
        test_index.append(members[:cut])
        train_index.append(members[cut:])
    train_index, test_index = torch.cat(train_index).sort().values, torch.cat(test_index).sort().values

    mean, std = normalisation(data_config, *channel_stats(images[train_index]))
    return InMemoryData(images[train_index], labels[train_index], images[test_index], labels[test_index], 10, mean, std)
