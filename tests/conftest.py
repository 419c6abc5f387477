"""Shared test helpers: run train.py in a subprocess, read run directories.

The subprocesses are forked from tests/forkserver.py, which has imported train.py once, instead of
starting a fresh interpreter each (``TESTS_FORKSERVER=0`` starts fresh ones)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import forkserver

REPO = Path(__file__).resolve().parents[1]

# One intra-op thread in the tests' own process too, as in their training subprocesses (train_env): the
# tensors are tiny, and two OpenMP threads that wait for each other at every op make the in-process
# tests 3-4 times slower whenever another process holds one of a 2-core machine's cores.
torch.set_num_threads(1)

# A fast, learnable training setup on the synthetic dataset (seconds on a 2-core CPU).
SMOKE = [
    "data.name=synthetic", "data.num_train=512", "data.num_test=256", "data.image_size=16",
    "train.batch_size=64", "train.eval_batch_size=256", "train.epochs=2", "train.log_interval=2",
    "train.lr=0.05", "train.milestones=[]", "loss.tffd.warmup_epochs=1",
]


def train_env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.pop("RANK", None), env.pop("WORLD_SIZE", None), env.pop("LOCAL_RANK", None)
    return env


def train_command(*args: str, config: str = "configs/quickstart.yaml") -> list[str]:
    return [sys.executable, str(REPO / "train.py"), "--config", str(REPO / config), *args]


def start_train(*args: str, config: str = "configs/quickstart.yaml") -> subprocess.Popen:
    """Start train.py without waiting (to signal it mid-run); stdout and stderr are text pipes."""
    return forkserver.popen(train_command(*args, config=config), cwd=REPO, env=train_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_train(*args: str, config: str = "configs/quickstart.yaml", timeout: float = 300,
              check: bool = False) -> subprocess.CompletedProcess:
    """``python train.py --config CONFIG ARGS...`` from the repository root."""
    command = train_command(*args, config=config)
    result = forkserver.run(command, cwd=REPO, env=train_env(), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"train.py exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def fake_run(run_dir: Path, config: str, overrides: list[str], last: float | None, best: float | None,
             epochs_done: int = 240, **metrics) -> None:
    """A run directory as the trainer leaves it (resolved config.yaml, metrics.json), without training;
    ``metrics`` adds keys to metrics.json (a history, calibration numbers)."""
    import yaml
    from core.typed_config import to_dict
    from engine.config import load_config

    run_dir.mkdir(parents=True)
    resolved = to_dict(load_config(REPO / config, overrides))
    (run_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    metrics = {"best_acc1": best, "last_acc1": last, "best_epoch": 200, "epochs_done": epochs_done,
               "epochs_total": 240, "finished": epochs_done == 240, "teacher_acc1": None, **metrics}
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
