"""The device-resident loader against the torchvision pipeline it replaces: the same pixels for the same
crop and flip, the same distribution of crops and flips, and the same sharding of samples."""

from __future__ import annotations

import pytest
import torch
from scipy import stats  # installed with scikit-learn
from torchvision.transforms.v2 import functional as TF

from data.device_loader import DeviceEvalLoader, DeviceTrainLoader, Normalizer, crop_flip, pad_images
from data.plans.plain import PlainPlan
from data.torch_loader import TensorImageDataset, TorchEvalLoader, TorchTrainLoader, small_image_transforms

SIZE, PAD = 32, 4
IDENTITY = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # normalisation that keeps x / 255


# ---------------------------------------------------------------- the same pixels
@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
def test_crop_flip_equals_torchvision_functional_pad_crop_flip(pad_mode):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, SIZE, SIZE), dtype=torch.uint8, generator=generator)
    index = torch.tensor([5, 0, 3, 3, 1, 2])
    top = torch.tensor([0, 8, 4, 1, 7, 0])  # the extremes 0 and 2 * PAD included
    left = torch.tensor([8, 0, 4, 6, 2, 0])
    flip = torch.tensor([False, True, True, False, True, False])
    out = crop_flip(pad_images(images, PAD, pad_mode), index, top, left, flip, SIZE)
    for row, (i, t, x, f) in enumerate(zip(index.tolist(), top.tolist(), left.tolist(), flip.tolist())):
        expected = TF.crop(TF.pad(images[i], [PAD], padding_mode=pad_mode), t, x, SIZE, SIZE)
        if f:
            expected = TF.horizontal_flip(expected)
        assert torch.equal(out[row], expected), f"sample {row}: top {t}, left {x}, flip {f}"


def test_normalizer_equals_to_dtype_then_normalize():
    images = torch.arange(256, dtype=torch.uint8).repeat(3).view(1, 3, 16, 16)  # every uint8 value per channel
    mean, std = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    expected = TF.normalize(TF.to_dtype(images, torch.float32, scale=True), list(mean), list(std))
    torch.testing.assert_close(Normalizer(mean, std, "cpu")(images), expected, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- the same distribution
def tagged_images(count: int) -> torch.Tensor:
    """Copies of one image whose red value is column + 1 and green value row + 1, so that the crop
    offsets and the flip of any augmented copy can be read off its pixels."""
    steps = torch.arange(1, SIZE + 1, dtype=torch.uint8)
    image = torch.stack([steps.expand(SIZE, SIZE), steps[:, None].expand(SIZE, SIZE), torch.full((SIZE, SIZE), 200)])
    return image.to(torch.uint8).expand(count, 3, SIZE, SIZE).contiguous()


def read_augmentation(batch: torch.Tensor):
    """(top, left, flip) of each augmented tagged image (normalised by IDENTITY), from its centre
    pixels, which lie inside the original image for any crop when PAD < SIZE / 2."""
    pixels = (batch * 255).round().long()
    red, green = pixels[:, 0, SIZE // 2], pixels[:, 1, SIZE // 2, SIZE // 2]
    flip = red[:, SIZE // 2 + 1] < red[:, SIZE // 2]
    top = green - 1 + PAD - SIZE // 2
    # Unflipped, output column j shows padded column left + j; flipped, left + SIZE - 1 - j.
    left = red[:, SIZE // 2] - 1 + PAD - SIZE // 2 + flip.long()
    return top, left, flip


def augmentations(loader) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    loader.set_epoch(1)
    parts = [read_augmentation(images) for images, *_ in loader]
    return tuple(torch.cat(column) for column in zip(*parts))


@pytest.fixture(scope="module")
def both_pipelines():
    count = 3000
    images, labels = tagged_images(count), torch.arange(count)
    device = DeviceTrainLoader(images, labels, *IDENTITY, 256, "cpu", 0, PlainPlan(), padding=PAD)
    transform = small_image_transforms(SIZE, *IDENTITY, PAD, "constant", True, train=True)
    torchvision = TorchTrainLoader(
        TensorImageDataset(images, labels, transform), 256, "cpu", 0, PlainPlan(), labels, num_workers=0
    )
    torch.manual_seed(0)  # torchvision's random transforms draw from the global generator without workers
    return {"device": augmentations(device), "torchvision": augmentations(torchvision)}


@pytest.mark.parametrize("pipeline", ["device", "torchvision"])
def test_offsets_uniform_on_0_to_2p_and_flips_half_independently(both_pipelines, pipeline):
    top, left, flip = both_pipelines[pipeline]
    bins = 2 * PAD + 1
    for name, offsets in (("top", top), ("left", left)):
        assert offsets.min() == 0 and offsets.max() == 2 * PAD, name
        assert stats.chisquare(torch.bincount(offsets, minlength=bins).numpy()).pvalue > 1e-3, name
    assert abs(flip.float().mean().item() - 0.5) < 4 * (0.25 / len(flip)) ** 0.5
    joint = torch.bincount((top * bins + left) * 2 + flip.long(), minlength=bins * bins * 2)
    assert stats.chisquare(joint.numpy()).pvalue > 1e-3, "top, left and flip are not independent and uniform"


def test_both_pipelines_draw_from_the_same_distribution(both_pipelines):
    device, torchvision = both_pipelines["device"], both_pipelines["torchvision"]
    for column, name in enumerate(("top", "left", "flip")):
        table = torch.stack([torch.bincount(p[column].long(), minlength=2 * PAD + 1) for p in (device, torchvision)])
        table = table[:, table.sum(dim=0) > 0]  # flips have two values, offsets 2 * PAD + 1
        assert stats.chi2_contingency(table.numpy()).pvalue > 1e-3, name


# ---------------------------------------------------------------- the same sharding
def indexed_data(count: int):
    """Images whose every pixel is the sample index modulo 251, labelled with the index."""
    index = torch.arange(count)
    return (index % 251).to(torch.uint8).view(-1, 1, 1, 1).expand(count, 3, 8, 8).contiguous(), index


def train_loaders(images, labels, rank, world_size, seed=0):
    dataset = TensorImageDataset(images, labels, small_image_transforms(8, *IDENTITY, 2, "constant", True, True))
    plan = PlainPlan()
    return {
        "device": DeviceTrainLoader(images, labels, *IDENTITY, 16, "cpu", seed, plan, rank, world_size, padding=2),
        "torchvision": TorchTrainLoader(dataset, 16, "cpu", seed, plan, labels, rank, world_size, num_workers=0),
    }


def epoch_labels(loader, epoch: int) -> list[int]:
    loader.set_epoch(epoch)
    labels, batches = [], 0
    for images, batch_labels, _ in loader:
        # The centre pixel survives any crop: it must be the labelled sample's image.
        assert torch.equal((images[:, 0, 4, 4] * 255).round().long(), batch_labels % 251)
        labels += batch_labels.tolist()
        batches += 1
    assert batches == len(loader)
    return labels


@pytest.mark.parametrize("kind", ["device", "torchvision"])
def test_each_epoch_is_a_new_permutation_of_the_dataset(kind):
    images, labels = indexed_data(100)
    loader = train_loaders(images, labels, 0, 1)[kind]
    first, second = epoch_labels(loader, 1), epoch_labels(loader, 2)
    assert sorted(first) == list(range(100)) and sorted(second) == list(range(100))
    assert first != second
    assert epoch_labels(loader, 1) == first, "an epoch's order depends only on (seed, epoch)"


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_split_each_epoch_into_disjoint_equal_shards(world_size):
    images, labels = indexed_data(100)
    for kind in ("device", "torchvision"):
        shards = [epoch_labels(train_loaders(images, labels, rank, world_size)[kind], 3) for rank in range(world_size)]
        seen = [label for shard in shards for label in shard]
        assert len(set(seen)) == len(seen) == 100 - 100 % world_size, kind
        assert {len(shard) for shard in shards} == {100 // world_size}, kind


def test_both_loaders_visit_samples_in_the_same_order():
    images, labels = indexed_data(100)
    for world_size in (1, 2):
        loaders = train_loaders(images, labels, world_size - 1, world_size)
        assert epoch_labels(loaders["device"], 5) == epoch_labels(loaders["torchvision"], 5)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_evaluation_counts_every_sample_exactly_once_unaugmented(world_size):
    images, labels = indexed_data(101)
    for kind in ("device", "torchvision"):
        seen = []
        for rank in range(world_size):
            if kind == "device":
                loader = DeviceEvalLoader(images, labels, *IDENTITY, 16, "cpu", rank, world_size)
            else:
                transform = small_image_transforms(8, *IDENTITY, 2, "constant", True, train=False)
                loader = TorchEvalLoader(TensorImageDataset(images, labels, transform), 16, "cpu", rank, world_size, 0)
            for batch, batch_labels in loader:
                torch.testing.assert_close(
                    batch,
                    images[batch_labels].float() / 255,
                    rtol=0,
                    atol=1e-6,
                    msg="evaluation images must not be augmented",
                )
                seen += batch_labels.tolist()
        assert sorted(seen) == list(range(101)), kind
