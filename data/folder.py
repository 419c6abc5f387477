"""Datasets stored as image files in one folder per class, read by DataLoader workers.

``imagenet``: ImageNet-1k (ILSVRC-2012) under ``data.root`` as ``train/<wnid>/*.JPEG`` and
``val/<wnid>/*.JPEG`` (validation images sorted into class folders, the layout torchvision's
reference scripts use). The standard recipe: random-resized crop 224 + flip for training, resize 256
+ center crop 224 for evaluation, ImageNet mean/std (``data.mean``/``data.std`` override them).

``imagefolder``: the user's own data as ``train/<class>/*`` and ``val/<class>/*`` (or ``test/``).
``data.image_size`` is the network's input side; ``data.crop`` picks the augmentation: ``pad``
(CIFAR-like small images: resize + center crop to the input side, then pad by ``data.padding`` and
random-crop back) or ``resized`` (ImageNet-like large images, as ``imagenet`` at ``data.image_size``).
Normalisation is ``data.mean``/``data.std``, ImageNet's when null (reading every image to measure
the dataset's own statistics would cost a pass over the data before each run).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension
from torchvision.transforms import v2

from core.errors import DataError

from .augmentations import build_augmentations
from .registry import BadImage, FolderData, normalisation, register_dataset
from .torch_loader import normalising_steps, small_image_transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_SIZE = 224
EVAL_CROP_FRACTION = 0.875  # evaluation: resize to side / 0.875 (256 for 224), then center-crop the side


def resized_crop_transforms(size: int, mean, std, hflip: bool, train: bool, augment=()) -> v2.Compose:
    """ImageNet-style pipeline on PIL images: random-resized crop (+ flip, + ``augment``:
    data/augmentations.py) for training, resize + center crop for evaluation; then a normalised float
    tensor."""
    if train:
        steps = [v2.RandomResizedCrop(size, antialias=True)] + ([v2.RandomHorizontalFlip()] if hflip else [])
    else:
        steps = [v2.Resize(round(size / EVAL_CROP_FRACTION), antialias=True), v2.CenterCrop(size)]
    return v2.Compose([*steps, v2.ToImage(), *normalising_steps(mean, std, augment if train else ())])


def padded_crop_transforms(size: int, mean, std, data_config, train: bool) -> v2.Compose:
    """CIFAR-style pipeline on PIL images: bring the image to size x size, then the in-memory datasets'
    pad + random crop (+ flip, + ``data.augment``) and normalisation."""
    return v2.Compose(
        [
            v2.Resize(size, antialias=True),
            v2.CenterCrop(size),
            v2.ToImage(),
            small_image_transforms(
                size,
                mean,
                std,
                data_config.padding,
                data_config.pad_mode,
                data_config.hflip,
                train,
                build_augmentations(data_config),
            ),
        ]
    )


def _split_dir(root: Path, names: tuple[str, ...], what: str, hint: str) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    expected = " or ".join(str(root / name) for name in names)
    raise DataError(f"{what}: directory not found: {expected} ({hint})")


@dataclass
class Skipped:
    """What a scan of class folders left out: symlinks that repeat a file or folder already counted (a loop
    such as ``a/loop -> ..``, a second link to one image), symlinks to an image of another class, and
    broken symlinks (only where ``data.skip_bad_images``; otherwise they are refused)."""

    repeated: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)

    def line(self, what: str) -> str | None:
        """The one warning line that says what was skipped, or None."""
        parts = [
            f"{len(paths)} {kind} (e.g. {paths[0]})"
            for paths, kind in (
                (self.repeated, "symlinks that repeat an image or folder already counted"),
                (self.foreign, "symlinks to images of another class, counted under their own"),
                (self.broken, "broken symlinks (data.skip_bad_images)"),
            )
            if paths
        ]
        if not parts:
            return None
        return (
            f"warning: {what}: every image file counts once, under the class folder that holds it; skipped "
            + ", ".join(parts)
        )


def _class_of(real: str, class_dirs: dict[str, str]) -> str | None:
    """The class whose folder (by real path) holds ``real``, the innermost one, or None: a dictionary lookup per
    level of ``real``'s path, not a comparison per class (1,000 of them on ImageNet, for every file)."""
    path = real
    while path not in class_dirs:
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent
    return class_dirs[path]


def scan_class_folders(
    directory: str,
    class_to_idx: dict[str, int],
    extensions: tuple[str, ...],
    what: str,
    skip_broken: bool,
    skipped: Skipped,
    counted: set[str],
) -> list[tuple[str, int]]:
    """(path, class index) of every image file under ``directory/<class>/`` once, by its real path, under the
    class folder that really holds it (an image linked from another class's folder counts there only), in
    torchvision's order. Symlinked folders are followed, each real folder once per class (a loop ends);
    what was left out goes to ``skipped``, the real paths of what was counted to ``counted``; a broken
    symlink is a ``DataError`` unless ``skip_broken``."""
    class_dirs: dict[str, str] = {}  # real folder -> the class that holds it: not a link to it, if one is not
    for name in sorted(class_to_idx, key=lambda name: (os.path.islink(os.path.join(directory, name)), name)):
        class_dirs.setdefault(os.path.realpath(os.path.join(directory, name)), name)
    samples = []
    for name in sorted(class_to_idx):
        visited: set[str] = set()
        folders = []
        for folder, subfolders, files in os.walk(os.path.join(directory, name), followlinks=True):
            visited.add(os.path.realpath(folder))
            for sub in list(subfolders):
                real = os.path.realpath(os.path.join(folder, sub))
                if real in visited:  # a loop (a/loop -> ..), or a folder this class already holds
                    skipped.repeated.append(os.path.join(folder, sub))
                    subfolders.remove(sub)
                elif _class_of(real, class_dirs) not in (None, name):
                    skipped.foreign.append(os.path.join(folder, sub))
                    subfolders.remove(sub)
            folders.append((folder, files))
        for folder, files in sorted(folders):
            for file in sorted(files):
                path = os.path.join(folder, file)
                if not has_file_allowed_extension(file, extensions):
                    continue
                if not os.path.exists(path):  # a symlink to nothing (or to itself)
                    if not skip_broken:
                        raise DataError(
                            f"{what}: broken symbolic link {path} -> {os.readlink(path)} (no such file); "
                            f"remove it or fix its target, or set data.skip_bad_images=true to skip such "
                            f"files"
                        )
                    skipped.broken.append(path)
                    continue
                real = os.path.realpath(path)
                if _class_of(real, class_dirs) not in (None, name):
                    skipped.foreign.append(path)
                elif real in counted:
                    skipped.repeated.append(path)
                else:
                    counted.add(real)
                    samples.append((path, class_to_idx[name]))
    return samples


class CheckedImageFolder(ImageFolder):
    """``ImageFolder`` that counts every image file once, under its own class (``scan_class_folders``), and
    whose sample is a ``BadImage`` where the file is empty, corrupt, truncated or a decompression bomb,
    rather than an exception deep inside a DataLoader worker."""

    def __init__(self, root: str, transform, what: str, skip_broken: bool):
        self.what, self.skip_broken, self.skipped = what, skip_broken, Skipped()
        self.real_paths: set[str] = set()  # of the counted files, for the check across splits (then dropped)
        super().__init__(root, transform=transform, allow_empty=True)

    def make_dataset(self, directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        return scan_class_folders(
            str(directory),
            class_to_idx,
            extensions or IMG_EXTENSIONS,
            self.what,
            self.skip_broken,
            self.skipped,
            self.real_paths,
        )

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        try:
            with warnings.catch_warnings():  # PIL warns past MAX_IMAGE_PIXELS and refuses past twice that
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = self.loader(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            return BadImage(path, f"a decompression bomb: {_first_line(error)}"), target
        except (OSError, ValueError, SyntaxError) as error:  # PIL's UnidentifiedImageError is an OSError
            return BadImage(path, f"{type(error).__name__}: {_first_line(error)}"), target
        return (self.transform(image) if self.transform is not None else image), target


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else ""


def _image_folder(directory: Path, transform, what: str, skip_broken: bool) -> CheckedImageFolder:
    try:
        dataset = CheckedImageFolder(str(directory), transform, what, skip_broken)
    except FileNotFoundError:  # torchvision: no class folder at all
        raise DataError(
            f"{what}: no class sub-folders in {directory} (expected one folder of images per class)"
        ) from None
    counts = torch.bincount(torch.as_tensor(dataset.targets, dtype=torch.int64), minlength=len(dataset.classes))
    empty = [name for name, count in zip(dataset.classes, counts.tolist()) if count == 0]
    if empty:
        more = f" (and {len(empty) - 1} more empty class folders)" if len(empty) > 1 else ""
        raise DataError(
            f"{what}: empty class folder {directory / empty[0]}{more}: no images "
            f"({', '.join(IMG_EXTENSIONS)}) of its own"
        )
    return dataset


def _folder_data(
    data_config, what: str, test_splits: tuple[str, ...], image_size: int, transforms, hint: str
) -> FolderData:
    """``transforms(train: bool)`` gives each split's pipeline; ``hint`` says how to lay out a missing split."""
    root = Path(data_config.root).expanduser()
    train_dir = _split_dir(root, ("train",), what, hint)
    test_dir = _split_dir(root, test_splits, what, hint)
    train = _image_folder(train_dir, transforms(True), what, data_config.skip_bad_images)
    test = _image_folder(test_dir, transforms(False), what, data_config.skip_bad_images)
    if test.classes != train.classes:  # labels are class indices in sorted order: the sets must agree
        differing = sorted(set(train.classes) ^ set(test.classes))[0]
        side = test_dir if differing in test.classes else train_dir
        raise DataError(
            f"{what}: {test_dir} and {train_dir} must hold the same class folders; "
            f"{side / differing} has no counterpart"
        )
    in_both = train.real_paths & test.real_paths
    train.real_paths = test.real_paths = set()
    if in_both:  # e.g. a training folder of symlinks into the test split
        raise DataError(
            f"{what}: {len(in_both)} image files are both in {train_dir} and in {test_dir} (by their real "
            f"paths, through symlinks), e.g. {sorted(in_both)[0]}: the test split would be trained on; "
            f"keep each image in one split"
        )
    skipped = Skipped(*(a + b for a, b in zip(dataclasses.astuple(train.skipped), dataclasses.astuple(test.skipped))))
    warning = skipped.line(what)
    if warning:
        print(warning, file=sys.stderr)
    return FolderData(train, test, len(train.classes), image_size)


@register_dataset("imagenet")
def imagenet(data_config) -> FolderData:
    mean, std = normalisation(data_config, IMAGENET_MEAN, IMAGENET_STD)
    return _folder_data(
        data_config,
        "imagenet",
        ("val",),
        IMAGENET_SIZE,
        lambda train: resized_crop_transforms(
            IMAGENET_SIZE, mean, std, data_config.hflip, train, build_augmentations(data_config)
        ),
        hint="ImageNet is never downloaded: put ILSVRC-2012's train/ and val/ under data.root, one folder per "
        "class (wnid) in each, validation images sorted into theirs",
    )


@register_dataset("imagefolder")
def imagefolder(data_config) -> FolderData:
    mean, std = normalisation(data_config, IMAGENET_MEAN, IMAGENET_STD)
    size = data_config.image_size
    if data_config.crop == "resized":

        def transforms(train):
            return resized_crop_transforms(size, mean, std, data_config.hflip, train, build_augmentations(data_config))
    else:

        def transforms(train):
            return padded_crop_transforms(size, mean, std, data_config, train)

    return _folder_data(
        data_config,
        "imagefolder",
        ("val", "test"),
        size,
        transforms,
        hint="expected train/ and val/ (or test/) under data.root, one sub-folder of images per class",
    )
