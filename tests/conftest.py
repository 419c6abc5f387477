"""Shared test helpers: train.py run in this process (``train.main``) or, for the tests that signal it, as
a process of its own; run directories written and read.

Every test gets back the process-wide state that it, or a run in it, changed (tests/in_process.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
from engine.trainer import Trainer

import ddp_probe
from in_process import REPO, Finished, process_state_kept, run_main

# One intra-op thread, as in the training subprocesses (train_env): the tensors are tiny, and two OpenMP
# threads that wait for each other at every op make the tests 3-4 times slower whenever another process
# holds one of a 2-core machine's cores.
torch.set_num_threads(1)

# A fast, learnable training setup on the synthetic dataset (seconds on a 2-core CPU).
SMOKE = [
    "data.name=synthetic",
    "data.num_train=512",
    "data.num_test=256",
    "data.image_size=16",
    "train.batch_size=64",
    "train.eval_batch_size=256",
    "train.epochs=2",
    "train.log_interval=2",
    "train.lr=0.05",
    "train.milestones=[]",
    "loss.tffd.warmup_epochs=1",
]


@pytest.fixture(autouse=True)
def _process_state_given_back():
    with process_state_kept():
        yield


def train_args(*args: str, config: str = "configs/quickstart.yaml") -> list[str]:
    return ["--config", str(REPO / config), *args]


def run_train(*args: str, config: str = "configs/quickstart.yaml", check: bool = False) -> Finished:
    """``python train.py --config CONFIG ARGS...`` from the repository root, run in this process."""
    return run_main(train.main, train_args(*args, config=config), check=check)


def run_train_with_fault(fault: str, step: int, *args: str, config: str = "configs/quickstart.yaml") -> Finished:
    """run_train with tests/ddp_probe.py's ``fault`` (sigterm: the process signals itself; nan: a NaN loss;
    fail: an exception) at the ``step``-th training step; the next run has none."""
    fit = Trainer.fit
    Trainer.fit = ddp_probe.probed_fit(fit, fault, rank=0, step=step)
    try:
        return run_train(*args, config=config)
    finally:
        Trainer.fit = fit


def train_env() -> dict:
    """The environment of a real train.py process: one thread, unbuffered, outside torchrun."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.pop("RANK", None), env.pop("WORLD_SIZE", None), env.pop("LOCAL_RANK", None)
    return env


def train_command(*args: str, config: str = "configs/quickstart.yaml") -> list[str]:
    return [sys.executable, str(REPO / "train.py"), *train_args(*args, config=config)]


def start_train(*args: str, config: str = "configs/quickstart.yaml") -> subprocess.Popen:
    """train.py as a process of its own, not waited for (to signal it mid-run); stdout and stderr are text pipes."""
    return subprocess.Popen(
        train_command(*args, config=config),
        cwd=REPO,
        env=train_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def fake_run(
    run_dir: Path,
    config: str,
    overrides: list[str],
    last: float | None,
    best: float | None,
    epochs_done: int = 240,
    **metrics,
) -> None:
    """A run directory as the trainer leaves it (resolved config.yaml, metrics.json), without training;
    ``metrics`` adds keys to metrics.json (a history, calibration numbers)."""
    import yaml

    from core.typed_config import to_dict
    from engine.config import load_config

    run_dir.mkdir(parents=True)
    resolved = to_dict(load_config(REPO / config, overrides))
    (run_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    metrics = {
        "best_acc1": best,
        "last_acc1": last,
        "best_epoch": 200,
        "epochs_done": epochs_done,
        "epochs_total": 240,
        "finished": epochs_done == 240,
        "teacher_acc1": None,
        **metrics,
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


def method_config(tmp_path: Path, method: str):
    """The quickstart experiment with ``configs/_base_/methods/<method>.yaml`` on top, loaded."""
    from engine.config import load_config

    path = tmp_path / "experiment.yaml"
    path.write_text(f"_base_: [{REPO / 'configs/quickstart.yaml'}, {REPO / f'configs/_base_/methods/{method}.yaml'}]\n")
    return load_config(path)


def attached(term, shapes, num_classes: int = 5, num_samples: int = 8):
    """``term`` checked against and attached to a model whose stages have these C x H x W shapes, as the
    builder does it."""
    from losses import TrainingSetup

    term.check_features(shapes)
    term.attach(TrainingSetup(num_samples=num_samples, num_classes=num_classes, epochs=2, feature_shapes=tuple(shapes)))
    return term


def leaf_tensors(shapes, num_classes: int = 5, batch: int = 4):
    """Stage features and logits of a batch as leaves that require gradients, and its labels 0, 1, 2, ..."""
    import torch

    feats = [torch.randn(batch, *shape, requires_grad=True) for shape in shapes]
    return feats, torch.randn(batch, num_classes, requires_grad=True), torch.arange(batch) % num_classes


def read_metrics(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())


@pytest.fixture
def repo() -> Path:
    return REPO
