"""A resume runs only under the config its checkpoint was trained under, and only into a model its
weights fit: last.pt records the resolved config, so a run directory whose config.yaml was deleted is
refused as one whose config.yaml differs; a last.pt of another architecture or class count is found
out before anything is written. Each refusal: one line, exit 2, the directory unchanged."""

from __future__ import annotations

import shutil

import pytest
import torch
from test_run_safety import snapshot

import train
from engine.checkpoint import load_checkpoint
from engine.cli import status_of
from models import build_model

from conftest import SMOKE

TINY = [*SMOKE, "data.num_train=128", "data.num_test=64", "train.batch_size=32"]


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A 1-epoch run, finished; each test marks it unfinished (``resume``)."""
    run_dir = tmp_path_factory.mktemp("stopped") / "run"
    assert (
        status_of(
            train.main, ["--config", "configs/quickstart.yaml", *TINY, "train.epochs=1", "--run-dir", str(run_dir)]
        )
        == 0
    )
    return run_dir


@pytest.fixture
def run_dir(stopped_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(stopped_run, copy)
    return copy


def resume(run_dir, *overrides: str) -> int:
    """The same command again, its metrics.json first marked unfinished (as a run killed after writing
    its last checkpoint leaves it), with ``overrides``; train.py's exit status."""
    metrics = run_dir / "metrics.json"
    metrics.write_text(metrics.read_text().replace('"finished": true', '"finished": false'))
    return status_of(
        train.main,
        ["--config", "configs/quickstart.yaml", *TINY, "train.epochs=1", *overrides, "--run-dir", str(run_dir)],
    )


def one_error_line(capfd) -> str:
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize(
    "override, difference",
    [
        ("train.lr=0.1", "train.lr: 0.05 -> 0.1"),
        ("loss.terms=[ce]", "loss.terms: ['ce', 'tffd'] -> ['ce']"),
        ("loss.tffd.lambda_intra=0.5", "loss.tffd.lambda_intra: 0.0008 -> 0.5"),
        ("seed=7", "seed: 0 -> 7"),
    ],
)
def test_a_resume_without_config_yaml_is_checked_against_the_checkpoint(run_dir, capfd, override, difference):
    (run_dir / "config.yaml").unlink()
    capfd.readouterr()
    before = snapshot(run_dir)
    assert resume(run_dir, override) == 2
    line = one_error_line(capfd)
    assert f"{run_dir} holds an unfinished run of another config ({difference}" in line, line
    assert "--overwrite" in line
    assert snapshot(run_dir) == {**before, "metrics.json": (run_dir / "metrics.json").read_bytes()}


def test_the_same_config_resumes_without_config_yaml(run_dir, capfd):
    (run_dir / "config.yaml").unlink()
    assert resume(run_dir, "data.num_workers=0") == 0  # a key a resume may change
    assert (run_dir / "config.yaml").is_file()


def test_an_old_checkpoint_without_its_config_needs_config_yaml(run_dir, capfd):
    state = load_checkpoint(run_dir / "last.pt")
    del state["config"]
    torch.save(state, run_dir / "last.pt")
    (run_dir / "config.yaml").unlink()
    capfd.readouterr()
    assert resume(run_dir) == 2
    line = one_error_line(capfd)
    assert "does not record the config it was trained under" in line and "config.yaml is gone" in line, line


def foreign_weights(model_name: str, num_classes: int) -> dict:
    return build_model(model_name, num_classes).state_dict()


@pytest.mark.parametrize(
    "change, message",
    [
        # another architecture, recorded as such by the checkpoint
        (
            lambda s: s.update(model=foreign_weights("resnet32", 10), model_name="resnet32"),
            "holds a resnet32, not a resnet20",
        ),
        # another class count, recorded
        (
            lambda s: s.update(model=foreign_weights("resnet20", 100), num_classes=100),
            "was trained for 100 classes, but the dataset has 10",
        ),
        # bare weights of another architecture, nothing recorded
        (
            lambda s: (s.update(model=foreign_weights("resnet32", 10)), s.pop("model_name"), s.pop("config")),
            "does not fit the model: unexpected keys",
        ),
        # bare weights of another class count
        (
            lambda s: (s.update(model=foreign_weights("resnet20", 100)), s.pop("num_classes"), s.pop("config")),
            "does not fit the model: shape mismatches (file vs model) fc.weight (100, 64) vs (10, 64)",
        ),
    ],
)
def test_a_last_checkpoint_of_another_model_is_found_out_before_anything_is_written(run_dir, capfd, change, message):
    state = load_checkpoint(run_dir / "last.pt")
    change(state)
    torch.save(state, run_dir / "last.pt")
    capfd.readouterr()
    before = snapshot(run_dir)
    assert resume(run_dir) == 2
    line = one_error_line(capfd)
    assert f"run checkpoint {run_dir / 'last.pt'} " in line and message in line and "--overwrite" in line, line
    assert snapshot(run_dir) == {**before, "metrics.json": (run_dir / "metrics.json").read_bytes()}
