"""Every batch-composing method's numbers, bit for bit: short deterministic CPU runs of ce, tffd, cs_kd, bake,
ddgsd, dlb, mixskd, ps_kd and byot on synthetic data, with both loaders, against the metrics recorded in
tests/golden/method_numbers/<method>_<loader>.json. A refactoring of how a step's batch is made (issue 25's
batch plans) must leave each of them unchanged; a change that is meant to change a method's numbers records
them again:

    UPDATE_GOLDEN=1 python -m pytest -q tests/test_method_numbers.py

The runs use PyTorch's portable CPU kernels (``ATEN_CPU_CAPABILITY=default``: no AVX2/AVX-512 code paths,
whose summation orders differ between machines; ``ONEDNN_MAX_CPU_ISA=SSE41`` holds oneDNN's convolutions to
the x86-64 baseline likewise), one thread and ``train.deterministic=true``, so the figures do not depend on
the machine's vector units. (An x86-64 machine is assumed, as this project's CI is.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, read_metrics, train_env

GOLDEN = REPO / "tests" / "golden" / "method_numbers"  # one file per method and loader
METHODS = ("ce", "tffd", "cs_kd", "bake", "ddgsd", "dlb", "mixskd", "ps_kd", "byot")
LOADERS = ("device", "torchvision")
RUN = [
    "data.name=synthetic",
    "data.num_train=80",
    "data.num_test=64",
    "data.image_size=16",
    "data.num_workers=0",
    "train.batch_size=32",
    "train.eval_batch_size=64",
    "train.epochs=2",
    "train.log_interval=1",
    "train.milestones=[]",
    "train.lr=0.05",
    "train.deterministic=true",
    "loss.tffd.warmup_epochs=2",
]
# ResNet-20 (the quickstart's model); 80 = 2 x 32 + a partial batch of 16, so every method meets one
KEYS = ("train_loss", "train_acc1", "test_loss", "test_acc1", "test_ece")  # per epoch, from metrics.json


def numbers(method: str, loader: str, tmp_path) -> dict:
    """The per-epoch figures of a fresh run of ``method`` (its configs/_base_/methods file over the
    quickstart) with ``loader``, in a process of its own with the portable kernels."""
    config = tmp_path / f"{method}.yaml"
    bases = [REPO / "configs/quickstart.yaml", REPO / f"configs/_base_/methods/{method}.yaml"]
    config.write_text(f"_base_: [{bases[0]}, {bases[1]}]\n")
    run_dir = tmp_path / f"{method}_{loader}"
    env = dict(train_env(), ATEN_CPU_CAPABILITY="default", ONEDNN_MAX_CPU_ISA="SSE41")
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            "--config",
            str(config),
            *RUN,
            f"data.loader={loader}",
            "--run-dir",
            str(run_dir),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return {key: [record[key] for record in read_metrics(run_dir)["history"]] for key in KEYS}


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("method", METHODS)
def test_a_methods_numbers_are_the_recorded_ones_bit_for_bit(method, loader, tmp_path):
    got, recorded = numbers(method, loader, tmp_path), GOLDEN / f"{method}_{loader}.json"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        recorded.write_text(json.dumps(got, indent=1) + "\n")
    assert got == json.loads(recorded.read_text()), f"{method} with the {loader} loader: {got}"
