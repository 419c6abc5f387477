"""data.augment (data/augmentations.py): torchvision's RandomErasing and AutoAugment, configured and
checked like every option, applied per image on both training loaders (never on test images), at the
right stage (uint8 before normalisation, float after), reproducible per (seed, epoch), and sharded
so that a 2-process run augments each image as the 1-process run does."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from core.errors import ConfigError
from data import InMemoryData, build_loaders
from data.augmentations import Augmentation, RandomEraseConfig, apply_per_image, build_augmentations, draw_seeds
from data.device_loader import DeviceTrainLoader
from data.folder import padded_crop_transforms, resized_crop_transforms
from data.plans.plain import PlainPlan
from data.plans.two_views import TwoViewsPlan
from data.torch_loader import small_image_transforms
from engine.config import DataConfig, load_config

from conftest import REPO, method_config

FILL = [7.0, 8.0, 9.0]  # out of reach of images normalised by IDENTITY (which lie in [0, 1])
IDENTITY = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
SIZE = 16


def erase_config(**options) -> DataConfig:
    options = {"p": 0.5, "scale": [0.05, 0.3], "value": FILL, **options}
    return DataConfig(augment=["random_erase"], random_erase=RandomEraseConfig(**options))


def in_memory(count: int = 128, seed: int = 0) -> InMemoryData:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 3, SIZE, SIZE), dtype=torch.uint8, generator=generator)
    labels = torch.arange(count) % 4
    return InMemoryData(images, labels, images[:32].clone(), labels[:32].clone(), 4, *IDENTITY)


def erased_boxes(images: torch.Tensor) -> list:
    """Per image: None, or the (height, width) of the rectangle holding FILL, after checking that the
    fill covers exactly that rectangle (its bounding box) and nothing else."""
    boxes = []
    for image in images:
        mask = (image == torch.tensor(FILL).view(3, 1, 1)).all(0)
        if not mask.any():
            boxes.append(None)
            continue
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        box = torch.zeros_like(mask)
        box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
        assert torch.equal(mask, box), "the erased pixels form one full rectangle"
        boxes.append((len(rows), len(cols)))
    return boxes


def check_erasing(images: torch.Tensor, p: float = 0.5, scale=(0.05, 0.3)) -> None:
    boxes = erased_boxes(images)
    erased = [box for box in boxes if box is not None]
    assert abs(len(erased) / len(boxes) - p) < 0.2, (len(erased), len(boxes))
    area = SIZE * SIZE
    for height, width in erased:  # rounding of the sides moves the area a little
        assert scale[0] * area * 0.6 <= height * width <= scale[1] * area * 1.4 and height < SIZE and width < SIZE


# ---------------------------------------------------------------- configuration
def test_random_erase_settings_reach_torchvision():
    config = erase_config(p=0.25, scale=[0.1, 0.2], ratio=[0.5, 2.0], value=[1.0, 2.0, 3.0])
    (augmentation,) = build_augmentations(config)
    transform = augmentation.transform
    assert isinstance(transform, v2.RandomErasing) and augmentation.stage == "normalised"
    settings = (transform.p, transform.scale, transform.ratio, transform.value)
    assert settings == (0.25, (0.1, 0.2), (0.5, 2.0), [1.0, 2.0, 3.0])


def test_autoaugment_settings_reach_torchvision():
    config = load_config(
        REPO / "configs/quickstart.yaml",
        [
            "data.augment=[autoaugment]",
            "data.autoaugment.policy=svhn",
            "data.autoaugment.interpolation=bilinear",
            "data.autoaugment.fill=[1,2,3]",
        ],
    )
    (augmentation,) = build_augmentations(config.data)
    transform = augmentation.transform
    assert isinstance(transform, v2.AutoAugment) and augmentation.stage == "uint8"
    assert transform.policy == v2.AutoAugmentPolicy.SVHN and transform.interpolation == v2.InterpolationMode.BILINEAR
    assert transform.fill == [1, 2, 3]


@pytest.mark.parametrize(
    "method, expected",
    [
        ("random_erase", {"p": 0.5, "scale": [0.02, 0.4], "ratio": [0.3, 1 / 0.3], "value": [0.4914, 0.4822, 0.4465]}),
        ("autoaugment", {"policy": "cifar10", "interpolation": "nearest", "fill": [0]}),
    ],
)
def test_method_configs_hold_the_original_settings(method, expected, tmp_path):
    config = method_config(tmp_path, method)
    assert (config.loss.terms, config.data.augment, config.batch.transforms) == (["ce"], [method], [])
    assert vars(getattr(config.data, method)) == expected
    for name in (method, f"{method}_tffd"):  # the self-KD table's configs keep them
        table = load_config(REPO / f"configs/cifar100/selfkd/cifar_resnet18_{name}.yaml")
        assert table.data.augment == [method] and vars(getattr(table.data, method)) == expected
        assert table.loss.terms == (["ce", "tffd"] if name.endswith("tffd") else ["ce"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.augment=[cutout]", "unknown augmentation 'cutout'; known augmentations: autoaugment, random_erase"),
        ("data.augment=[random_erase,random_erase]", "data.augment lists an augmentation twice"),
        (
            "data.augment=[random_erase,autoaugment]",
            "autoaugment works on uint8 images, before normalisation, so it must come before random_erase",
        ),
        ("data.random_erase.p=1.5", "data.random_erase.p must be <= 1, got 1.5"),
        ("data.random_erase.scale=[0.4,0.02]", r"data.random_erase.scale must be \[min, max\] with min <= max"),
        ("data.random_erase.scale=[0.02,1.5]", r"data.random_erase.scale\[1\] must be <= 1"),
        ("data.random_erase.ratio=[0,2]", r"data.random_erase.ratio\[0\] must be > 0"),
        ("data.random_erase.ratio=[0.3]", r"data.random_erase.ratio must be \[min, max\]"),
        ("data.random_erase.value=[1,2]", "data.random_erase.value needs 1 value .every channel. or 3"),
        ("data.autoaugment.policy=cifar100", "data.autoaugment.policy must be one of cifar10, imagenet, svhn"),
        ("data.autoaugment.fill=[256]", r"data.autoaugment.fill\[0\] must be <= 255"),
        ("data.autoaugment.fill=[1,2]", "data.autoaugment.fill needs 1 value"),
    ],
)
def test_bad_options_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(REPO / "configs/quickstart.yaml", [override])


# ---------------------------------------------------------------- the transforms themselves
def test_autoaugment_runs_per_image_on_uint8_and_keeps_shapes_and_dtype():
    (augmentation,) = build_augmentations(DataConfig(augment=["autoaugment"]))
    images = in_memory(64).train_images
    out = apply_per_image(augmentation.transform, images, list(range(64)))
    assert out.shape == images.shape and out.dtype == torch.uint8
    changed = (out != images).flatten(1).any(1)
    assert 0 < changed.sum() < 64  # a policy's operations are each applied with a probability
    again = apply_per_image(augmentation.transform, images, list(range(64)))
    assert torch.equal(out, again)  # the image's seed fixes its augmentation


def test_apply_per_image_is_the_transform_after_seeding_and_restores_the_generator():
    (augmentation,) = build_augmentations(erase_config(p=1.0))
    images = torch.rand(5, 3, SIZE, SIZE)
    state = torch.get_rng_state()
    out = apply_per_image(augmentation.transform, images, [11, 12, 13, 14, 15])
    assert torch.equal(torch.get_rng_state(), state)
    for image, expected, seed in zip(images, out, [11, 12, 13, 14, 15]):
        torch.manual_seed(seed)
        assert torch.equal(augmentation.transform(image), expected)
    torch.set_rng_state(state)


def test_seeds_are_drawn_for_the_global_order_and_sliced_like_it():
    alone = draw_seeds((2, 1), 10, seed=3, epoch=4, stream=5, rank=0, world_size=1)
    assert alone.shape == (2, 1, 10)
    for rank in range(3):
        assert torch.equal(draw_seeds((2, 1), 10, 3, 4, 5, rank, 3), alone[..., rank:9:3])
    assert not torch.equal(draw_seeds((2, 1), 10, 3, 5, 5, 0, 1), alone)  # another epoch


# ---------------------------------------------------------------- both loaders
@pytest.mark.parametrize("loader", ["device", "torchvision"])
def test_both_loaders_erase_some_training_images_and_no_test_image(loader):
    config = erase_config()
    config.loader, config.num_workers = loader, 0
    loaders = build_loaders(config, in_memory(256), 64, 64, "cpu", 0)
    loaders.train.set_epoch(1)
    check_erasing(torch.cat([images for images, *_ in loaders.train]))
    assert all(box is None for images, _ in loaders.test for box in erased_boxes(images))


@pytest.mark.parametrize("crop", ["pad", "resized"])
def test_imagefolder_pipelines_erase_training_images_only(crop):
    config = erase_config()
    config.image_size, config.crop = SIZE, crop
    image = Image.new("RGB", (20, 12), (200, 40, 40))
    mean, std = IDENTITY
    if crop == "pad":
        train, test = (padded_crop_transforms(SIZE, mean, std, config, train) for train in (True, False))
    else:
        train, test = (
            resized_crop_transforms(SIZE, mean, std, True, train, build_augmentations(config))
            for train in (True, False)
        )
    torch.manual_seed(0)
    check_erasing(torch.stack([train(image) for _ in range(200)]))
    assert all(box is None for box in erased_boxes(torch.stack([test(image) for _ in range(20)])))


class Spy:
    """A stand-in transform that records the dtype it is given."""

    def __init__(self):
        self.dtypes = set()

    def __call__(self, image):
        self.dtypes.add(image.dtype)
        return image


def test_each_stage_sees_the_image_it_needs_on_both_loaders():
    data = in_memory(32)
    spies = {"uint8": Spy(), "normalised": Spy()}
    augment = [Augmentation(f"spy_{stage}", stage, spy) for stage, spy in spies.items()]
    for _ in DeviceTrainLoader(
        data.train_images, data.train_labels, *IDENTITY, 16, "cpu", 0, PlainPlan(), augment=augment
    ):
        pass
    transform = small_image_transforms(SIZE, *IDENTITY, 2, "constant", True, True, augment)
    transform(data.train_images[0])
    assert spies["uint8"].dtypes == {torch.uint8} and spies["normalised"].dtypes == {torch.float32}


def device_images(augment_names, seed=0, epoch=1, rank=0, world_size=1, batch=16, data=None):
    """{dataset index: the image the device loader made of it} for one epoch (anchors only)."""
    data = data or in_memory(64)
    config = DataConfig(augment=augment_names, random_erase=erase_config().random_erase)
    loader = DeviceTrainLoader(
        data.train_images,
        data.train_labels,
        *IDENTITY,
        batch,
        "cpu",
        seed,
        PlainPlan(),
        rank,
        world_size,
        padding=2,
        augment=build_augmentations(config),
    )
    loader.set_epoch(epoch)
    out = {}
    for images, _, indices in loader:
        out.update(zip(indices[:batch].tolist(), images[:batch]))
    return out


def same(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)


@pytest.mark.parametrize("names", [["random_erase"], ["autoaugment", "random_erase"]])
def test_device_loader_is_reproducible_per_epoch_and_sharded_like_the_one_process_run(names):
    data = in_memory(64)
    reference = device_images(names, data=data)
    assert same(device_images(names, data=data), reference)
    assert not same(device_images(names, epoch=2, data=data), reference)
    assert not same(device_images(names, seed=1, data=data), reference)
    assert same(device_images(names, batch=7, data=data), reference)  # the batch size does not matter
    ranks = {}
    for rank in range(2):  # each rank takes half the batch of the 1-process run
        ranks.update(device_images(names, rank=rank, world_size=2, batch=8, data=data))
    assert same(ranks, reference)


def test_device_loader_leaves_the_global_generator_and_augments_partners_apart():
    data = in_memory(64)
    config = erase_config(p=1.0)
    loader = DeviceTrainLoader(
        data.train_images,
        data.train_labels,
        *IDENTITY,
        16,
        "cpu",
        0,
        TwoViewsPlan(),
        padding=0,
        hflip=False,
        augment=build_augmentations(config),
    )
    state = torch.get_rng_state()
    batches = list(loader)
    assert torch.equal(torch.get_rng_state(), state)
    for images, _, indices in batches:  # each image's second view is erased elsewhere
        assert torch.equal(indices[:16], indices[16:])
        assert (images[:16] != images[16:]).flatten(1).any(1).float().mean() > 0.8
