"""A checkpoint that would run code when unpickled is refused wherever a checkpoint is read (model.weights,
teacher.checkpoint, a run's last.pt, scripts/evaluate.py), in one line that says it needs arbitrary
unpickling and is refused for safety, never torch's advice to load it with weights_only=False; and
weights holding NaN or Inf are refused before anything is written."""

from __future__ import annotations

import os
import pickle
import shutil

import pytest
import torch

import train
from engine.cli import status_of
from models import build_model
from scripts import evaluate

from conftest import REPO, SMOKE, run_train
from in_process import run_main

TINY = [*SMOKE, "data.num_train=64", "data.num_test=64", "train.batch_size=32", "train.epochs=1"]


class Payload:
    """Unpickling it (unsafely) creates ``marker``."""

    def __init__(self, marker, call=os.mkdir):
        self.marker, self.call = str(marker), call

    def __reduce__(self):
        return self.call, (self.marker,)


def torch_file(path, marker):
    torch.save({"model": build_model("resnet20", 10).state_dict(), "extra": Payload(marker)}, path)


def pickle_file(protocol):
    def write(path, marker):
        with open(path, "wb") as handle:
            pickle.dump({"model": Payload(marker)}, handle, protocol=protocol)

    return write


def bare_payload(path, marker):
    torch.save(Payload(marker, call=os.makedirs), path)


WRITERS = {"torch.save": torch_file, "pickle-2": pickle_file(2), "pickle-4": pickle_file(4), "bare": bare_payload}
CALLS = {"torch.save": "posix.mkdir", "pickle-2": "posix.mkdir", "pickle-4": "posix.mkdir", "bare": "os.makedirs"}


def assert_refused_for_safety(code: int, err: str, path, marker, call: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert f"{path} needs arbitrary unpickling (it would call {call}" in lines[0], lines[0]
    assert "refused for safety" in lines[0] and "weights_only" not in err and "corrupt" not in err, lines[0]
    assert not os.path.exists(marker)


@pytest.mark.parametrize("kind", WRITERS)
@pytest.mark.parametrize("where", ["model.weights", "teacher.checkpoint"])
def test_weights_that_need_arbitrary_unpickling_are_refused(tmp_path, capfd, kind, where):
    path, marker, run_dir = tmp_path / "weights.pt", tmp_path / "marker", tmp_path / "run"
    WRITERS[kind](path, marker)
    options = (
        [f"model.weights={path}"]
        if where == "model.weights"
        else ["loss.terms=[ce,kd]", "teacher.model=resnet20", f"teacher.checkpoint={path}"]
    )
    code = status_of(train.main, ["--config", "configs/quickstart.yaml", *TINY, *options, "--run-dir", str(run_dir)])
    assert_refused_for_safety(code, capfd.readouterr().err, path, marker, CALLS[kind])
    assert not run_dir.exists()


@pytest.mark.parametrize("kind", ["torch.save", "pickle-4"])
def test_a_last_checkpoint_that_needs_arbitrary_unpickling_is_refused(tmp_path, capfd, kind):
    run_dir, marker = tmp_path / "run", tmp_path / "marker"
    run_train(*TINY, "--run-dir", str(run_dir), check=True)
    (run_dir / "metrics.json").write_text(
        (run_dir / "metrics.json").read_text().replace('"finished": true', '"finished": false')
    )
    WRITERS[kind](run_dir / "last.pt", marker)
    code = status_of(train.main, ["--config", "configs/quickstart.yaml", *TINY, "--run-dir", str(run_dir)])
    assert_refused_for_safety(code, capfd.readouterr().err, run_dir / "last.pt", marker, CALLS[kind])


@pytest.mark.parametrize("kind", ["torch.save", "pickle-2", "bare"])
def test_evaluate_refuses_a_checkpoint_that_needs_arbitrary_unpickling(tmp_path, kind):
    path, marker = tmp_path / "weights.pt", tmp_path / "marker"
    WRITERS[kind](path, marker)
    result = run_main(evaluate.main, [str(path), "--config", str(REPO / "configs/quickstart.yaml"), *TINY])
    assert_refused_for_safety(result.returncode, result.stderr, path, marker, CALLS[kind])


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", ["model.weights", "teacher.checkpoint"])
def test_weights_with_non_finite_values_are_refused_before_anything_is_written(tmp_path, capfd, value, where):
    weights = build_model("resnet20", 10).state_dict()
    weights["fc.weight"][0, 0] = value
    weights["stem.1.running_var"][3] = value
    path, run_dir = tmp_path / "weights.pt", tmp_path / "run"
    torch.save(weights, path)
    options = (
        [f"model.weights={path}"]
        if where == "model.weights"
        else ["loss.terms=[ce,kd]", "teacher.model=resnet20", f"teacher.checkpoint={path}"]
    )
    code = status_of(train.main, ["--config", "configs/quickstart.yaml", *TINY, *options, "--run-dir", str(run_dir)])
    lines = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert f"{where} {path} holds NaN or Inf values in " in lines[0] and "fc.weight" in lines[0], lines[0]
    assert "stem.1.running_var" in lines[0]
    assert not run_dir.exists()


def test_finite_weights_still_load(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(build_model("resnet20", 10).state_dict(), path)
    run_dir = tmp_path / "run"
    assert (
        status_of(
            train.main,
            ["--config", "configs/quickstart.yaml", *TINY, f"model.weights={path}", "--run-dir", str(run_dir)],
        )
        == 0
    )
    shutil.rmtree(run_dir)
