"""Per-image training augmentations beyond crop and flip, named in order in ``data.augment``, each
with its options in ``data.<name>``: torchvision's own v2 transforms, on both training loaders.

Each one works at a stage of the pipeline: ``uint8`` ones (AutoAugment) see the cropped and flipped
uint8 image, before normalisation; ``normalised`` ones (Random Erasing) see the normalised float
image. ``data.augment`` lists the ``uint8`` ones first. Test images are never augmented.

- torchvision loader (``data/torch_loader.py`` and the ImageFolder pipelines of ``data/folder.py``):
  the transforms join the per-sample v2 pipeline, so they draw from the DataLoader workers' seeded
  generators (or, with ``data.num_workers=0``, from the main process's, which checkpoints save), as
  the crop and flip there do.
- device loader (``data/device_loader.py``): the transform runs on each image of the batch, on the
  device, after the batched crop and flip (and normalisation, for ``normalised`` ones). Before each
  image, PyTorch's CPU generator (where torchvision draws its parameters) is seeded from a seed drawn
  for that image's position in the epoch's global order, from (seed, epoch, stream) alone: one seed per
  augmentation and image, sliced like the order. So an image's augmentation depends neither on the
  batch size nor on the world size (a W-process run augments like the 1-process run), a resumed run
  redraws its epoch exactly, and the rest of training does not see these draws (the generator's state
  is put back after each batch). The price: a Python call per image and augmentation (on one CPU core,
  about 0.13 ms per 32 x 32 image for random_erase, 0.65 ms for autoaugment), and, on CUDA, the small
  host-to-device copies torchvision's kernels make per image (the erase value, an affine matrix), each
  of which may wait for the device; where that is slow, ``data.loader=torchvision`` spreads the same
  transforms over DataLoader workers.

``random_erase`` (Zhong et al., AAAI 2020, zhunzhong07/Random-Erasing ``transforms.py`` and
``utils/transforms.py``, after ``Normalize`` in its ``cifar.py``, CIFAR-10 and -100 alike): with probability p, one
rectangle of area fraction U(0.02, 0.4) and aspect ratio between r1 = 0.3 and 1/r1 is set to fixed
values. torchvision's ``RandomErasing`` differs from that code in three small ways, kept here: the
aspect ratio is log-uniform (the original's is uniform on [0.3, 3.33], so three draws in four there
give tall rectangles); it gives up after 10 rectangles that do not fit (the original, 100); and a
rectangle must be strictly smaller than the image (one version of the original allows equal). The
fill: the original writes the numbers 0.4914, 0.4822, 0.4465 (CIFAR-10's mean in [0, 1] units, on
CIFAR-100 too) into the *normalised* image, so the rectangle is not the mean pixel (that would be 0)
but about half a standard deviation above it; Self-KD-Lib (``dataloader/dataloaders.py``) writes
CIFAR-100's mean numbers (0.5071, 0.4867, 0.4408) the same way. Both are "a little above the mean";
the default follows the original, as the other augmentation rows follow their authors' settings.

``autoaugment`` (Cubuk et al., CVPR 2019): torchvision's ``AutoAugment`` with the CIFAR-10 policy
(25 sub-policies of two operations), as Self-KD-Lib's ``--data-aug auto_aug``: after the random crop
and flip, before normalisation, nearest interpolation and fill 0 (torchvision's defaults). The
authors' TensorFlow code (tensorflow/models ``research/autoaugment/data_utils.py``) applies the policy
before pad-crop and flip, fills with grey (128) and always adds Cutout 16; here it follows
Self-KD-Lib's order (the device loader's crop is a gather from pre-padded images), ``fill`` is an
option, and Cutout is ``batch.transforms=[cutout]`` with ``batch.cutout.length=16``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torchvision.transforms import v2

from core.errors import ConfigError, shown
from core.registry import Registry
from core.typed_config import Options, option

from .sharding import epoch_generator, rank_positions

STAGES = ("uint8", "normalised")  # the order the stages run in
AUGMENTATIONS = Registry("augmentation")  # name -> (builder(config) -> v2 transform, config dataclass, stage)


def register_augmentation(name: str, config: type, stage: str):
    assert stage in STAGES, stage
    return AUGMENTATIONS.register(name, wrap=lambda builder: (builder, config, stage))


def _pair(values: list[float], key: str) -> None:
    if len(values) != 2 or values[0] > values[1]:
        raise ConfigError(f"{key} must be [min, max] with min <= max, got {shown(values)}")


def _channels(values: list, key: str) -> None:
    if len(values) not in (1, 3):
        raise ConfigError(f"{key} needs 1 value (every channel) or 3 (one per channel), got {shown(values)}")


@dataclass
class RandomEraseConfig(Options):
    p: float = option(0.5, "probability that an image gets a rectangle erased", min=0, max=1)
    scale: list[float] = option(
        [0.02, 0.4], "[min, max] fraction of the image area erased (zhunzhong07: sl, sh)", min=0, max=1
    )
    ratio: list[float] = option(
        [0.3, 1 / 0.3],
        "[min, max] aspect ratio h / w of the rectangle, log-uniform (zhunzhong07: r1 to 1/r1, r1 = 0.3)",
        above=0,
        max=100,
    )
    value: list[float] = option(
        [0.4914, 0.4822, 0.4465],
        "fill, in normalised units (0 = the mean pixel), 1 value "
        "or 3: zhunzhong07's numbers; Self-KD-Lib [0.5071, 0.4867, 0.4408]",
        min=-100,
        max=100,
    )

    def __post_init__(self):
        super().__post_init__()
        _pair(self.scale, "data.random_erase.scale")
        _pair(self.ratio, "data.random_erase.ratio")
        _channels(self.value, "data.random_erase.value")


@register_augmentation("random_erase", RandomEraseConfig, stage="normalised")
def random_erase(config: RandomEraseConfig) -> v2.RandomErasing:
    return v2.RandomErasing(p=config.p, scale=tuple(config.scale), ratio=tuple(config.ratio), value=list(config.value))


@dataclass
class AutoAugmentConfig(Options):
    policy: str = option(
        "cifar10",
        "the learned policy (Self-KD-Lib uses CIFAR-10's on CIFAR-100 and ImageNet)",
        choices=("cifar10", "imagenet", "svhn"),
    )
    interpolation: str = option(
        "nearest", "resampling of rotate/shear/translate (torchvision's default)", choices=("nearest", "bilinear")
    )
    fill: list[int] = option(
        [0],
        "pixel value of the areas rotate/shear/translate uncover, 1 value or 3 "
        "(0: torchvision's default, as Self-KD-Lib; 128: the authors' code)",
        min=0,
        max=255,
    )

    def __post_init__(self):
        super().__post_init__()
        _channels(self.fill, "data.autoaugment.fill")


@register_augmentation("autoaugment", AutoAugmentConfig, stage="uint8")
def autoaugment(config: AutoAugmentConfig) -> v2.AutoAugment:
    return v2.AutoAugment(
        v2.AutoAugmentPolicy(config.policy),
        interpolation=v2.InterpolationMode(config.interpolation),
        fill=config.fill[0] if len(config.fill) == 1 else list(config.fill),
    )


@dataclass(frozen=True)
class Augmentation:
    name: str
    stage: str  # one of STAGES
    transform: Callable  # a torchvision v2 transform of one C x H x W image


def check_augment_names(names: list[str]) -> None:
    """Known names, none twice, the ``uint8`` stage's before the ``normalised`` one's: else a ``ConfigError``."""
    for name in names:
        AUGMENTATIONS.lookup(name)
    if len(set(names)) != len(names):
        raise ConfigError(f"data.augment lists an augmentation twice: {shown(names)}")
    stages = [STAGES.index(AUGMENTATIONS[name][2]) for name in names]
    if stages != sorted(stages):
        late = next(names[i] for i in range(1, len(names)) if stages[i] < stages[i - 1])
        raise ConfigError(
            f"data.augment: {late} works on uint8 images, before normalisation, so it must come before "
            f"{', '.join(n for n in names if AUGMENTATIONS[n][2] == 'normalised')} (got {shown(names)})"
        )


def build_augmentations(data_config) -> list[Augmentation]:
    """The augmentations of ``data.augment``, in order, each built from its section ``data.<name>``."""
    names = list(data_config.augment)
    check_augment_names(names)
    built = []
    for name in names:
        builder, _, stage = AUGMENTATIONS[name]
        built.append(Augmentation(name, stage, builder(getattr(data_config, name))))
    return built


def stage_transforms(augmentations: list[Augmentation], stage: str) -> list:
    return [augmentation.transform for augmentation in augmentations if augmentation.stage == stage]


def draw_seeds(
    shape: tuple[int, ...], total: int, seed: int, epoch: int, stream: int, rank: int, world_size: int
) -> torch.Tensor:
    """Seeds of shape ``shape`` x this rank's positions (CPU, int64): drawn for every position of the
    epoch's global order of ``total`` samples from (seed, epoch, stream) alone, then sliced like the order."""
    seeds = torch.randint(0, 2**62, (*shape, total), generator=epoch_generator(seed, epoch, stream=stream))
    return seeds[..., rank_positions(total, rank, world_size)]


def apply_per_image(transform: Callable, images: torch.Tensor, seeds: list[int]) -> torch.Tensor:
    """``transform`` on each image of the N x C x H x W batch (any device), the CPU generator seeded with
    ``seeds[n]`` before image n; the generator's state is restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        out = []
        for image, image_seed in zip(images, seeds):
            torch.default_generator.manual_seed(image_seed)
            out.append(transform(image))
    return torch.stack(out) if out else images
