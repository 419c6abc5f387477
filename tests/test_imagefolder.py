"""Class-per-subfolder datasets (``imagefolder``, ``imagenet``) on a tiny generated folder of PNGs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from core.errors import DataError
from data import build_dataset
from data.folder import IMAGENET_MEAN, IMAGENET_STD
from engine.config import DataConfig

from conftest import read_metrics, run_train

CLASSES = {"cat": (200, 40, 40), "dog": (40, 40, 200)}  # one flat colour per class: learnable, checkable
SPLITS = {"train": 4, "val": 2}  # images per class


def make_image_tree(root: Path, splits: dict = SPLITS, size: tuple[int, int] = (20, 12)) -> Path:
    """root/<split>/<class>/<n>.png; images of the same class share a colour."""
    for split, count in splits.items():
        for name, colour in CLASSES.items():
            (root / split / name).mkdir(parents=True)
            for index in range(count):
                Image.new("RGB", size, colour).save(root / split / name / f"{index}.png")
    return root


@pytest.fixture
def image_tree(tmp_path) -> Path:
    return make_image_tree(tmp_path / "images")


def folder_config(root: Path, **options) -> DataConfig:
    return DataConfig(name=options.pop("name", "imagefolder"), root=str(root), **options)


@pytest.mark.parametrize("crop", ["pad", "resized"])
def test_samples_are_normalised_images_labelled_by_folder(image_tree, crop):
    data = build_dataset(folder_config(image_tree, image_size=16, crop=crop))
    assert (data.num_classes, data.image_size, len(data.train), len(data.test)) == (2, 16, 8, 4)
    for dataset in (data.train, data.test):
        for index in (0, len(dataset) - 1):
            image, label = dataset[index]
            assert image.dtype == torch.float32 and image.shape == (3, 16, 16)
            colour = torch.tensor(list(CLASSES.values())[label]) / 255
            expected = (colour - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
            if dataset is data.test:  # no augmentation: every pixel is the class colour
                torch.testing.assert_close(image, expected.view(3, 1, 1).expand(3, 16, 16), atol=1e-5, rtol=0)
            else:  # padding may add zero pixels at the border; the centre is the class colour
                torch.testing.assert_close(image[:, 8, 8], expected, atol=1e-5, rtol=0)


def test_config_normalisation_and_test_split(tmp_path):
    root = make_image_tree(tmp_path / "images", {"train": 2, "test": 1})
    data = build_dataset(folder_config(root, image_size=8, mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0]))
    image, label = data.test[0]
    torch.testing.assert_close(image[:, 0, 0], torch.tensor(list(CLASSES.values())[label]) / 255)


def test_imagenet_is_the_standard_224_pipeline(image_tree):
    data = build_dataset(folder_config(image_tree, name="imagenet"))
    assert data.image_size == 224 and data.num_classes == 2
    image, _ = data.train[0]
    assert image.shape == (3, 224, 224)
    image, _ = data.test[0]
    assert image.shape == (3, 224, 224)


def test_trains_one_epoch_through_train_py(image_tree, tmp_path):
    run_dir = tmp_path / "run"
    run_train(
        "data.name=imagefolder",
        f"data.root={image_tree}",
        "data.image_size=16",
        "data.num_workers=0",
        "train.epochs=1",
        "train.batch_size=4",
        "train.eval_batch_size=4",
        "train.milestones=[]",
        "loss.tffd.warmup_epochs=1",
        "--run-dir",
        str(run_dir),
        check=True,
    )
    metrics = read_metrics(run_dir)
    assert metrics["finished"] and metrics["epochs_done"] == 1
    assert "data: imagefolder, 8 train / 4 test images, 2 classes" in (run_dir / "log.txt").read_text()


def _missing_train(root: Path) -> Path:
    shutil.rmtree(root / "train")
    return root / "train"


def _empty_class(root: Path) -> Path:
    for image in (root / "train" / "dog").iterdir():
        image.unlink()
    return root / "train" / "dog"


@pytest.mark.parametrize("breakage", [_missing_train, _empty_class])
def test_bad_folder_exits_2_naming_the_path_and_writes_nothing(image_tree, tmp_path, breakage):
    bad_path = breakage(image_tree)
    run_dir = tmp_path / "run"
    result = run_train(
        "data.name=imagefolder", f"data.root={image_tree}", "data.num_workers=0", "--run-dir", str(run_dir)
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad_path) in lines[0], result.stderr
    assert not run_dir.exists()


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda root: shutil.rmtree(root / "val"), r"directory not found: .*/val or .*/test"),
        (lambda root: shutil.rmtree(root / "val" / "dog"), r"must hold the same class folders; .*/train/dog has no"),
        (lambda root: (root / "val" / "bird").mkdir(), r"empty class folder .*/val/bird"),
        (lambda root: [shutil.rmtree(root / "train" / name) for name in CLASSES], r"no class sub-folders in .*/train"),
    ],
    ids=["no-val-or-test", "class-missing-from-val", "empty-val-class", "no-class-folders"],
)
def test_bad_folders_are_data_errors(image_tree, breakage, message):
    breakage(image_tree)
    with pytest.raises(DataError, match=message):
        build_dataset(folder_config(image_tree))


def damage_two_images(root: Path) -> list[Path]:
    """An empty file and one of garbage bytes, in the training split."""
    empty, garbage = root / "train" / "cat" / "0.png", root / "train" / "dog" / "1.png"
    empty.write_bytes(b"")
    garbage.write_bytes(b"\x89PNG not really" * 10)
    return [empty, garbage]


@pytest.mark.parametrize("workers", ["0", "2"])
def test_an_unreadable_image_is_one_line_naming_the_file(image_tree, tmp_path, workers):
    bad = damage_two_images(image_tree)
    run_dir = tmp_path / "run"
    result = run_train(
        "data.name=imagefolder",
        f"data.root={image_tree}",
        "data.image_size=16",
        f"data.num_workers={workers}",
        "train.epochs=1",
        "train.batch_size=4",
        "--run-dir",
        str(run_dir),
    )
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unreadable image "), result.stderr[-3000:]
    assert any(str(path) in lines[0] for path in bad) and "data.skip_bad_images=true" in lines[0]


def test_skip_bad_images_trains_on_the_rest_and_counts_them(image_tree, tmp_path):
    bad = damage_two_images(image_tree)
    run_dir = tmp_path / "run"
    run_train(
        "data.name=imagefolder",
        f"data.root={image_tree}",
        "data.image_size=16",
        "data.num_workers=0",
        "data.skip_bad_images=true",
        "train.epochs=2",
        "train.batch_size=4",
        "--run-dir",
        str(run_dir),
        check=True,
    )
    log = (run_dir / "log.txt").read_text()
    assert log.count("skipped 2 unreadable image files (data.skip_bad_images)") == 2  # once per epoch
    assert any(str(path) in log for path in bad)
    assert read_metrics(run_dir)["finished"] is True


# ---------------------------------------------------------------- what counts as a sample
def _samples(root: Path, **options) -> list[tuple[str, str]]:
    """(real path, class name) of every training sample of the folder dataset at ``root``."""
    dataset = build_dataset(folder_config(root, **options)).train
    return [(os.path.realpath(path), dataset.classes[target]) for path, target in dataset.samples]


def _loop_inside_a_class(train: Path) -> int:
    (train / "cat" / "a").mkdir()
    (train / "cat" / "a" / "loop").symlink_to("..")  # cat/a/loop/a/loop/... for ever
    return 1


def _loop_to_the_split(train: Path) -> int:
    (train / "dog" / "up").symlink_to("..")  # every class again, under dog
    return 1


def _links_to_another_class(train: Path) -> int:
    (train / "cat" / "stolen.png").symlink_to(train / "dog" / "0.png")
    (train / "cat" / "dogs").symlink_to(train / "dog")
    return 2


def _a_second_link_to_one_image(train: Path) -> int:
    (train / "cat" / "again.png").symlink_to("0.png")
    (train / "cat" / "more").mkdir()
    (train / "cat" / "more" / "again.png").symlink_to(train / "cat" / "1.png")
    return 2


@pytest.mark.parametrize(
    "links", [_loop_inside_a_class, _loop_to_the_split, _links_to_another_class, _a_second_link_to_one_image]
)
def test_every_image_file_counts_once_under_its_own_class_and_one_line_says_what_was_skipped(image_tree, capfd, links):
    plain = _samples(image_tree)
    capfd.readouterr()
    skipped = links(image_tree / "train")
    samples = _samples(image_tree)
    assert sorted(samples) == sorted(plain) and len(samples) == 8  # 4 per class, each with its folder's label
    err = capfd.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("warning: imagefolder: every image file counts once, under the class folder that holds it")
    assert f"skipped {skipped} symlinks" in err


def test_an_outside_image_linked_into_a_class_counts_there(image_tree, tmp_path):
    outside = tmp_path / "outside.png"
    Image.new("RGB", (20, 12), CLASSES["cat"]).save(outside)
    (image_tree / "train" / "cat" / "extra.png").symlink_to(outside)
    assert (str(outside), "cat") in _samples(image_tree)


def _link_a_test_image(root: Path) -> None:
    (root / "train" / "cat" / "4.png").symlink_to(root / "val" / "cat" / "0.png")


def _link_the_test_class_folder(root: Path) -> None:
    (root / "train" / "dog" / "more").symlink_to(root / "val" / "dog")


def _test_image_links_to_a_training_image(root: Path) -> None:
    (root / "val" / "cat" / "2.png").symlink_to(root / "train" / "cat" / "1.png")


@pytest.mark.parametrize(
    "leak", [_link_a_test_image, _link_the_test_class_folder, _test_image_links_to_a_training_image]
)
def test_an_image_in_both_splits_is_refused_before_anything_is_written(image_tree, tmp_path, leak):
    """By real path, through symlinks (files or folders, either way round): a test image would be trained on."""
    leak(image_tree)
    with pytest.raises(DataError, match=r"image files are both in .*/train and in .*/val .* keep each image in one"):
        build_dataset(folder_config(image_tree))
    run_dir = tmp_path / "run"
    result = run_train(
        "data.name=imagefolder", f"data.root={image_tree}", "data.num_workers=0", "--run-dir", str(run_dir)
    )
    assert result.returncode == 2 and "both in" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not run_dir.exists()


def _one_class(root: Path) -> None:
    for split in SPLITS:
        shutil.rmtree(root / split / "dog")


def _second_class_is_a_link_to_the_first(root: Path) -> None:
    for split in SPLITS:
        shutil.rmtree(root / split / "dog")
        (root / split / "dog").symlink_to("cat")


@pytest.mark.parametrize(
    "breakage, message",
    [
        (_one_class, "imagefolder: the data under data.root=.* has 1 class, and classification needs at least two"),
        (_second_class_is_a_link_to_the_first, "empty class folder .*/train/dog: no images .* of its own"),
    ],
)
def test_fewer_than_two_classes_is_refused_before_anything_is_written(image_tree, tmp_path, breakage, message):
    breakage(image_tree)
    for name in ("imagefolder", "imagenet"):
        with pytest.raises(DataError, match=message.replace("imagefolder", name)):
            build_dataset(folder_config(image_tree, name=name))
    run_dir = tmp_path / "run"
    result = run_train(
        "data.name=imagefolder", f"data.root={image_tree}", "data.num_workers=0", "--run-dir", str(run_dir)
    )
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr[-3000:]
    assert not run_dir.exists()


@pytest.mark.parametrize("target", ["missing.png", "itself.png"])
def test_a_broken_symlink_is_refused_before_the_run_directory_or_skipped_and_counted(
    image_tree, tmp_path, capfd, target
):
    link = image_tree / "train" / "dog" / "itself.png"
    link.symlink_to(target)
    run_dir = tmp_path / "run"
    result = run_train(
        "data.name=imagefolder", f"data.root={image_tree}", "data.num_workers=0", "--run-dir", str(run_dir)
    )
    assert result.returncode == 2 and not run_dir.exists(), result.stderr[-3000:]
    assert result.stderr == (
        f"error: imagefolder: broken symbolic link {link} -> {target} (no such file); remove it "
        f"or fix its target, or set data.skip_bad_images=true to skip such files\n"
    )
    assert len(_samples(image_tree, skip_bad_images=True)) == 8
    assert f"skipped 1 broken symlinks (data.skip_bad_images) (e.g. {link})" in capfd.readouterr().err


@pytest.mark.parametrize("side", [10_000, 20_000])  # 100 megapixels: PIL warns; 400: PIL refuses
@pytest.mark.parametrize("skip", [False, True])
def test_a_decompression_bomb_is_one_line_naming_the_file_or_skipped_and_counted(image_tree, tmp_path, skip, side):
    bomb = image_tree / "train" / "cat" / "1.png"
    Image.new("1", (side, side)).save(bomb)  # a few kilobytes
    assert bomb.stat().st_size < 100_000
    run_dir = tmp_path / "run"
    result = run_train(
        "data.name=imagefolder",
        f"data.root={image_tree}",
        "data.image_size=16",
        "data.num_workers=0",
        f"data.skip_bad_images={str(skip).lower()}",
        "train.epochs=1",
        "train.batch_size=4",
        "--run-dir",
        str(run_dir),
    )
    if skip:
        assert result.returncode == 0, result.stderr[-3000:]
        assert "skipped 1 unreadable image files (data.skip_bad_images)" in (run_dir / "log.txt").read_text()
    else:
        assert result.returncode == 2, result.stderr[-3000:]
        assert result.stderr.startswith(f"error: unreadable image {bomb} (a decompression bomb: ")
        assert len(result.stderr.splitlines()) == 1
