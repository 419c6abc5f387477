"""Multi-process training (DDP) for real: two CPU processes through torchrun, gloo backend.

The runs are tiny (16x16 synthetic images, 1024 training and 257 test images, global batch 128, so 8
steps per epoch) but go through the same code as a multi-GPU job. The test set has an odd size so that
padding it to a multiple of the world size (what DistributedSampler does) would show in the count.
``tests/ddp_probe.py`` runs train.py with the checks and faults that need the live process group.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from core.errors import ConfigError
from data.device_loader import DeviceTrainLoader
from data.plans.plain import PlainPlan
from engine.builder import build_experiment
from engine.config import load_config
from engine.distributed import DistContext, choose_device
from models import build_model

from conftest import REPO, read_metrics, run_train, train_env
from in_process import Finished

CONFIG = "configs/quickstart.yaml"  # ce + Tf-FD
NUM_TRAIN, NUM_TEST, STEPS_PER_EPOCH = 1024, 257, 8
SMALL = [
    "data.name=synthetic",
    f"data.num_train={NUM_TRAIN}",
    f"data.num_test={NUM_TEST}",
    "data.image_size=16",
    "train.batch_size=128",
    "train.eval_batch_size=128",
    "train.epochs=2",
    "train.log_interval=1",
    "train.lr=0.05",
    "train.milestones=[]",
    "loss.tffd.warmup_epochs=1",
]
RUN_FILES = {"config.yaml", "log.txt", "metrics.json", "last.pt", "best.pt"}
TIMEOUT = 180  # seconds; a job that hangs fails the test instead of blocking the suite
# 2 processes vs 1, same global batch and seed: same initial weights, same images and augmentation at
# every step. What differs is BatchNorm, which normalises each rank's 64 images with their own batch
# statistics instead of all 128 images', and the order of floating-point sums. Relative difference of the
# per-step training loss (see docs/DISTRIBUTED.md for the measurements):
FIRST_STEP_TOLERANCE = 0.005  # step 1, before any update: measured <= 0.05%; another seed: 1.7-16%
CURVE_TOLERANCE = 0.04  # mean over all 16 steps: measured 0.7-2.0%; another seed: 3.5-8%; lr x 2: 16%


def launch(command: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``command`` in its own process group; on timeout kill the whole group (torchrun and its
    workers) and fail, so a hang can never outlive the test."""
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env or train_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{' '.join(command[:6])} ... still running after {TIMEOUT} s (a hang):\n{output[-3000:]}")
    return subprocess.CompletedProcess(command, process.returncode, output, "")


def torchrun_probe(*args: str) -> subprocess.CompletedProcess:
    return launch(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(REPO / "tests/ddp_probe.py"),
            *args,
        ]
    )


def dist_train(*args: str) -> subprocess.CompletedProcess:
    env = dict(train_env(), PYTHON=sys.executable)
    return launch([str(REPO / "scripts/dist_train.sh"), "2", CONFIG, *args], env=env)


def replica_differences(output: str) -> tuple[float, float]:
    """(parameters, buffers): the largest difference between the ranks' replicas at the end."""
    found = re.search(r"probe: replica max abs diff: parameters (\S+) buffers (\S+)", output)
    return float(found.group(1)), float(found.group(2))


def rank0_pid(output: str) -> int:
    return int(re.search(r"probe: rank 0 pid (\d+)", output).group(1))


def event_file_pids(run_dir: Path) -> set[int]:
    """The writers' pids: TensorBoard names files events.out.tfevents.<time>.<host>.<pid>.<n>."""
    return {int(path.name.split(".")[-2]) for path in run_dir.glob("events.out.tfevents.*")}


def train_loss_curve(run_dir: Path) -> dict[int, float]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {event.step: event.value for event in events.Scalars("train/loss")}


def assert_finished(result: subprocess.CompletedProcess | Finished, run_dir: Path) -> dict:
    assert result.returncode == 0, result.stdout[-4000:]
    metrics = read_metrics(run_dir)
    assert metrics["finished"] and metrics["epochs_done"] == 2
    return metrics


@pytest.fixture(scope="module")
def kd_tffd(tmp_path_factory) -> list[str]:
    """SMALL with CE + KD + Tf-FD, the richest combination: a frozen teacher (random weights are enough
    here) replicated on every rank, next to the DDP-wrapped student."""
    teacher = tmp_path_factory.mktemp("teacher") / "resnet20.pt"
    with torch.random.fork_rng():
        torch.manual_seed(1)  # the teacher of the measurements quoted above
        torch.save(build_model("resnet20", num_classes=10).state_dict(), teacher)
    return [*SMALL, "loss.terms=[ce,kd,tffd]", "teacher.model=resnet20", f"teacher.checkpoint={teacher}"]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, kd_tffd):
    """One uninterrupted 2-process run through scripts/dist_train.sh."""
    base = tmp_path_factory.mktemp("ddp")
    result = dist_train(*kd_tffd, "--run-dir", str(base / "run"))
    return base, base / "run", result


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory, kd_tffd):
    run_dir = tmp_path_factory.mktemp("single") / "run"
    result = run_train(*kd_tffd, "--run-dir", str(run_dir), config=CONFIG)
    return run_dir, result


# ---------------------------------------------------------------------------------------------- torchrun runs
def test_two_process_run_counts_every_test_sample_once_and_only_rank_0_writes(two_process_run):
    base, run_dir, result = two_process_run
    metrics = assert_finished(result, run_dir)
    assert metrics["world_size"] == 2 and metrics["train_samples"] == NUM_TRAIN
    assert [epoch["test_samples"] for epoch in metrics["history"]] == [NUM_TEST, NUM_TEST]
    assert metrics["test_samples"] == NUM_TEST
    # One run directory holding one run's files; one writer: every event file comes from a single process.
    assert [path.name for path in base.iterdir()] == ["run"]
    names = {path.name for path in run_dir.iterdir()}
    assert {name for name in names if not name.startswith("events.out.tfevents.")} == RUN_FILES
    assert len(event_file_pids(run_dir)) == 1
    # Rank 1 logs nothing: every line of the run appears once.
    assert result.stdout.count("(fresh)") == 1 and result.stdout.count("epoch 2/2") == 1
    assert "2 process(es)" in result.stdout and "global batch 128" in result.stdout
    assert result.stdout.count("teacher resnet20: test top-1") == 1  # evaluated once, over both shards


def test_two_processes_follow_the_one_process_loss_curve(two_process_run, one_process_run):
    _, two_dir, two_result = two_process_run
    one_dir, one_result = one_process_run
    assert_finished(two_result, two_dir)
    assert_finished(one_result, one_dir)
    two, one = train_loss_curve(two_dir), train_loss_curve(one_dir)
    # The same number of optimiser steps: each rank takes batch_size / 2 images per step.
    assert sorted(two) == sorted(one) == list(range(1, 2 * STEPS_PER_EPOCH + 1))
    relative = [abs(two[step] - one[step]) / one[step] for step in sorted(one)]
    assert relative[0] <= FIRST_STEP_TOLERANCE, relative[0]
    assert sum(relative) / len(relative) <= CURVE_TOLERANCE, [f"{r:.3f}" for r in relative]
    assert read_metrics(one_dir)["test_samples"] == read_metrics(two_dir)["test_samples"] == NUM_TEST


def test_resume_under_ddp_continues_the_uninterrupted_run_exactly(two_process_run, kd_tffd, tmp_path):
    _, reference_dir, reference_result = two_process_run
    reference = assert_finished(reference_result, reference_dir)
    run_dir = tmp_path / "run"
    args = [*kd_tffd, "--config", str(REPO / CONFIG), "--run-dir", str(run_dir)]

    # A preemption notice reaching rank 0 alone, in the middle of epoch 2: both ranks agree to stop.
    stopped = torchrun_probe("--inject", "sigterm", "--rank", "0", "--step", str(STEPS_PER_EPOCH + 3), *args)
    assert stopped.returncode != 0
    assert "stopped by SIGTERM after 1 finished epochs" in stopped.stdout, stopped.stdout[-4000:]
    partial = read_metrics(run_dir)
    assert partial["epochs_done"] == 1 and not partial["finished"] and partial["stopped_by"] == "SIGTERM"
    # Mid-epoch, the parameters agree; BatchNorm statistics are each rank's own until the next sync.
    assert replica_differences(stopped.stdout)[0] == 0.0

    resumed = torchrun_probe(*args)
    metrics = assert_finished(resumed, run_dir)
    assert "resuming after epoch 1" in resumed.stdout
    # Every rank loaded last.pt (model, optimiser, scheduler) and redid epoch 2: the replicas agree and
    # the result is the uninterrupted run's, number for number.
    assert replica_differences(resumed.stdout) == (0.0, 0.0)
    keys = ("train_loss", "train_acc1", "test_loss", "test_acc1", "test_samples")
    assert [[epoch[k] for k in keys] for epoch in metrics["history"]] == [
        [epoch[k] for k in keys] for epoch in reference["history"]
    ]
    assert event_file_pids(run_dir) == {rank0_pid(stopped.stdout), rank0_pid(resumed.stdout)}


def fault_on_rank_one(kind: str, run_dir) -> subprocess.CompletedProcess:
    """The 2-process run of CONFIG with the fault ``kind`` injected on rank 1 at step 3 (tests/ddp_probe.py)."""
    injected = ["--inject", kind, "--rank", "1", "--step", "3"]
    return torchrun_probe(*injected, *SMALL, "--config", str(REPO / CONFIG), "--run-dir", str(run_dir))


def test_an_error_on_one_rank_ends_the_job_with_its_message(tmp_path):
    # Rank 1 raises in the forward pass while rank 0 goes on into the backward pass, where DDP waits
    # for rank 1's gradients: the job must still end, not wait for the 30-minute collective timeout.
    result = fault_on_rank_one("fail", tmp_path / "run")
    assert result.returncode != 0
    # torchrun's failure summary (train.main is decorated with @record) holds the failing rank's traceback.
    summary = result.stdout.rpartition(" FAILED\n")[2]
    assert "RuntimeError: injected failure on rank 1 at step 3" in summary, result.stdout[-4000:]


def test_a_nonfinite_loss_on_one_rank_stops_every_rank_with_the_message(tmp_path):
    run_dir = tmp_path / "run"
    result = fault_on_rank_one("nan", run_dir)
    assert result.returncode != 0
    message = "non-finite loss at epoch 1, step 3 (bad: ce"
    assert message in result.stdout and message in (run_dir / "log.txt").read_text()
    assert "Connection closed by peer" not in result.stdout  # rank 0 stopped too, rather than crashing


def test_an_indivisible_global_batch_is_a_clear_error(tmp_path):
    result = dist_train(*SMALL, "train.batch_size=63", "--run-dir", str(tmp_path / "run"))
    assert result.returncode != 0
    assert "error: train.batch_size=63 is not divisible by the 2 processes; use a multiple of 2" in result.stdout
    assert "exitcode  : 2" in result.stdout  # the workers exit with the user-error code; torchrun with 1
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------- in-process
def test_ranks_together_train_on_the_one_process_batches():
    """Same (seed, epoch): at every step, rank 0's and rank 1's images (augmentation included) are
    exactly the 1-process batch of twice the size."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (257, 3, 8, 8), dtype=torch.uint8, generator=generator)
    labels = torch.arange(257)  # odd: one sample sits out of the 2-process epoch

    def batches(batch_size, rank=0, world_size=1):
        loader = DeviceTrainLoader(
            images, labels, (0.5,) * 3, (0.25,) * 3, batch_size, "cpu", 3, PlainPlan(), rank=rank, world_size=world_size
        )
        loader.set_epoch(2)
        return list(loader)

    single, rank0, rank1 = batches(64), batches(32, 0, 2), batches(32, 1, 2)
    assert len(rank0) == len(rank1) == 4 and len(single) == 5  # the 1-process run's 5th step: 1 image
    for (x, y, _), (x0, y0, _), (x1, y1, _) in zip(single, rank0, rank1):
        both = torch.cat([y0, y1])
        assert sorted(both.tolist()) == sorted(y.tolist())
        assert torch.equal(torch.cat([x0, x1])[torch.argsort(both)], x[torch.argsort(y)])


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.batch_size=63", "train.batch_size=63 is not divisible by the 2 processes"),
        ("model.sync_bn=true", "model.sync_bn=true needs GPUs"),
    ],
)
def test_two_process_config_errors_come_before_anything_is_built(override, message):
    config = load_config(REPO / CONFIG, [*SMALL, override])
    with pytest.raises(ConfigError, match=message):
        build_experiment(config, DistContext(rank=0, world_size=2, local_rank=0, device=torch.device("cpu")))


def test_more_processes_than_gpus_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert choose_device("auto", local_rank=1) == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match=r"process 2 of this node has no GPU of its own \(2 visible\)"):
        choose_device("cuda", local_rank=2)


# ---------------------------------------------------------------------------------------------- dist_train.sh
@pytest.mark.parametrize(
    "args, env, message",
    [
        ([], {}, "usage:"),
        (["two", CONFIG], {}, "NPROC (two) and NNODES (1) must be positive integers"),
        (["2", CONFIG], {"NNODES": "2"}, "NNODES=2 needs RDZV_ENDPOINT=HOST:PORT"),
    ],
)
def test_dist_train_script_rejects_bad_launch_arguments(args, env, message):
    result = subprocess.run(
        [str(REPO / "scripts/dist_train.sh"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=30,
    )
    assert result.returncode == 2 and message in result.stderr
