"""scripts/visualize.py: a Tf-FD run's feature figures against a CE run's, their numbers, and bad input."""

from __future__ import annotations

import argparse
import json

import matplotlib.image
import pytest
import torch
import torch.nn.functional as F

import train
from data import build_dataset
from engine.cli import status_of
from engine.config import load_config
from engine.inference import add_checkpoint_arguments, checkpoint_overrides
from losses.tffd import channel_salience, intra_fd
from models import build_model
from results.figures import DPI
from scripts import visualize

from conftest import REPO, SMOKE

ONE_EPOCH = [*SMOKE, "data.num_train=128", "data.num_test=64", "train.epochs=1"]
NUM_IMAGES, SHOWN, CHANNELS = 40, 2, 3
# 40 images in batches of 24: the statistics are summed over two uneven batches.
VISUALIZE = [
    "--num-images",
    str(NUM_IMAGES),
    "--images",
    str(SHOWN),
    "--channels",
    str(CHANNELS),
    "train.eval_batch_size=24",
]
FIGURES = {"salience", "similarity", "maps", "maps_compare"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One epoch of Tf-FD and one of CE, resnet20 on 16x16 synthetic images (a few seconds)."""
    root = tmp_path_factory.mktemp("visualize")
    for name in ("tffd", "ce"):
        config = str(REPO / f"configs/cifar10/resnet20_{name}.yaml")
        assert status_of(train.main, ["--config", config, *ONE_EPOCH, "--run-dir", str(root / name)]) == 0
    return root


@pytest.fixture(scope="module")
def rendered(runs):
    out = runs / "figures" / "resnet20"  # a parent that does not exist yet
    code = status_of(
        visualize.main,
        [str(runs / "tffd" / "best.pt"), "--compare", str(runs / "ce" / "best.pt"), "--out", str(out), *VISUALIZE],
    )
    assert code == 0
    return out, json.loads((out / "features.json").read_text())


def test_every_figure_is_a_png_and_a_pdf_of_the_size_it_was_drawn_at(rendered):
    out, record = rendered
    assert set(record["figures"]) == FIGURES
    assert sorted(path.name for path in out.iterdir()) == sorted(
        ["features.json", *(f"{name}.{suffix}" for name in FIGURES for suffix in ("png", "pdf"))]
    )
    for name, figure in record["figures"].items():
        width, height = figure["figsize_inches"]
        assert figure["dpi"] == DPI
        assert figure["pixels"] == [round(width * DPI), round(height * DPI)]
        pixels = matplotlib.image.imread(out / figure["png"])
        assert pixels.shape == (figure["pixels"][1], figure["pixels"][0], 4), name
        assert pixels[..., :3].std() > 0.05, f"{name}.png is blank"
        pdf = (out / figure["pdf"]).read_bytes()
        assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF"), name
    # resnet20 has three stages: one row of three salience panels, 4.2 x 3.4 inches each plus the title.
    assert record["figures"]["salience"]["figsize_inches"] == [12.6, 3.9]


def test_the_numbers_are_consistent(rendered, runs):
    _, record = rendered
    assert (record["model"], record["dataset"], record["images"], record["shown_images"]) == (
        "resnet20",
        "synthetic",
        NUM_IMAGES,
        SHOWN,
    )
    assert record["checkpoint"]["path"] == str(runs / "tffd" / "best.pt")
    assert record["compare"]["label"] == "ce/best.pt"
    for run in (record["checkpoint"], record["compare"]):
        assert [s["channels"] for s in run["stages"]] == [16, 32, 64]
        for stage in run["stages"]:
            sorted_salience, channels = stage["salience_sorted"], stage["channels"]
            assert sorted(stage["order"]) == list(range(channels)) and stage["half"] == channels // 2
            assert sorted_salience == sorted(sorted_salience, reverse=True)
            assert sorted_salience == [stage["salience"][c] for c in stage["order"]]
            assert -1 <= stage["cosine"] <= 1 and stage["mse"] >= 0
            assert stage["shown_most_salient"] == stage["order"][:CHANNELS]
            assert stage["shown_least_salient"] == stage["order"][-CHANNELS:]


def stage_features_by_hand(run_dir, count: int) -> list[torch.Tensor]:
    """The first ``count`` test images through the run's best.pt, built without the script's helpers."""
    config = load_config(run_dir / "config.yaml")
    data = build_dataset(config.data)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (data.mean, data.std))
    images = (data.test_images[:count].float() / 255 - mean) / std
    model = build_model(config.model.name, data.num_classes)
    model.load_state_dict(torch.load(run_dir / "best.pt", weights_only=True)["model"])
    with torch.no_grad():
        return model.eval()(images)[1]


@pytest.mark.parametrize("role, run", [("checkpoint", "tffd"), ("compare", "ce")])
def test_the_numbers_match_losses_tffd_on_the_same_images(rendered, runs, role, run):
    _, record = rendered
    for feature, stage in zip(stage_features_by_hand(runs / run, NUM_IMAGES), record[role]["stages"]):
        salience = channel_salience(feature)
        assert stage["salience"] == pytest.approx(salience.tolist(), rel=1e-5, abs=1e-7)
        assert stage["mse"] == pytest.approx(intra_fd(feature).item(), rel=1e-4)
        order, half = torch.argsort(salience, descending=True, stable=True), feature.shape[1] // 2
        salient, redundant = feature[:, order[:half]].flatten(1), feature[:, order[half : 2 * half]].flatten(1)
        assert stage["cosine"] == pytest.approx(F.cosine_similarity(salient, redundant).mean().item(), rel=1e-4)


@pytest.fixture(scope="module")
def other_architectures(runs):
    """A resnet32 run checkpoint (it names its model) and a bare resnet8x4 state_dict (it does not)."""
    run_checkpoint, bare = runs / "resnet32.pt", runs / "resnet8x4.pt"
    torch.save(
        {"model": build_model("resnet32", 10).state_dict(), "model_name": "resnet32", "num_classes": 10}, run_checkpoint
    )
    torch.save(build_model("resnet8x4", 10).state_dict(), bare)
    return run_checkpoint, bare


@pytest.mark.parametrize(
    "case",
    [
        "no checkpoint",
        "out is a file",
        "out below a file",
        "out is a dangling symlink",
        "out is a symlink loop",
        "out holds a link to a run's file",
        "no compare",
        "compare resnet32",
        "compare bare resnet8x4",
        "num-images 0",
        "images 0",
        "channels -1",
        "more images shown than used",
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, runs, other_architectures, tmp_path, capfd):
    checkpoint, compare = runs / "tffd" / "best.pt", runs / "ce" / "best.pt"
    out, options = tmp_path / "figures", []
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    expected = {
        "no checkpoint": f"checkpoint not found: {tmp_path / 'missing.pt'}",
        "out is a file": f"--out {blocker} is a file, not a directory",
        "out below a file": f"--out {blocker / 'figures'}: {blocker} is a file, not a directory",
        "out is a dangling symlink": f"--out {out} is a symlink to {tmp_path / 'nowhere'}, which does not exist",
        "out is a symlink loop": f"--out {out} leads into a symlink loop",
        "out holds a link to a run's file": f"--out {out / 'features.json'} (a link to {runs / 'tffd' / 'config.yaml'})"
        f" is the run's config.yaml in {runs / 'tffd'}, which only that run writes",
        "no compare": f"--compare checkpoint not found: {tmp_path / 'missing.pt'}",
        "compare resnet32": f"--compare checkpoint {other_architectures[0]} holds a resnet32, but {checkpoint} "
        f"is a resnet20",
        "compare bare resnet8x4": f"--compare checkpoint {other_architectures[1]} does not fit the model",
        "num-images 0": "--num-images must be at least 1, got 0",
        "images 0": "--images must be at least 1, got 0",
        "channels -1": "--channels must be at least 1, got -1",
        "more images shown than used": "--images 5 is more than --num-images 4",
    }[case]
    if case == "no checkpoint":
        checkpoint = tmp_path / "missing.pt"
    elif case == "out is a file":
        out = blocker
    elif case == "out below a file":
        out = blocker / "figures"
    elif case == "out is a dangling symlink":
        out.symlink_to(tmp_path / "nowhere")
    elif case == "out is a symlink loop":
        out.symlink_to(out)
    elif case == "out holds a link to a run's file":
        out.mkdir()
        (out / "features.json").symlink_to(runs / "tffd" / "config.yaml")
    elif case == "no compare":
        compare = tmp_path / "missing.pt"
    elif case.startswith("compare "):
        compare = other_architectures[0 if "resnet32" in case else 1]
    else:
        options = {
            "num-images 0": ["--num-images", "0"],
            "images 0": ["--images", "0"],
            "channels -1": ["--channels", "-1"],
            "more images shown than used": ["--images", "5", "--num-images", "4"],
        }[case]
    before, run_config = sorted(tmp_path.rglob("*")), (runs / "tffd" / "config.yaml").read_bytes()
    code = status_of(visualize.main, [str(checkpoint), "--compare", str(compare), "--out", str(out), *options])
    _, err = capfd.readouterr()
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"error: {expected}"), err
    assert sorted(tmp_path.rglob("*")) == before and blocker.read_text() == "keep me"
    assert (runs / "tffd" / "config.yaml").read_bytes() == run_config


def test_data_is_short_for_data_root_and_an_explicit_override_wins():
    parser = argparse.ArgumentParser()
    add_checkpoint_arguments(parser)
    args = parser.parse_intermixed_args(["ckpt.pt", "--data", "/datasets", "train.device=cpu"])
    assert checkpoint_overrides(args) == ["data.root=/datasets", "train.device=cpu"]
    args = parser.parse_intermixed_args(["ckpt.pt", "--data", "/a", "data.root=/b"])
    assert load_config(REPO / "configs/quickstart.yaml", checkpoint_overrides(args)).data.root == "/b"
