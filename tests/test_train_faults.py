"""Faults while train.py writes: a full disk at any of its writes (config.yaml, log.txt, TensorBoard's
events, last.pt), the run directory deleted or made read-only while the run trains, a DLB run resumed by
another number of processes, a second Ctrl-C during the shutdown. Each: one `error:` line (no traceback,
not even from TensorBoard's writer thread), last.pt kept where it still exists."""

from __future__ import annotations

import builtins
import errno
import shutil
import signal
import subprocess
import sys

import pytest

import engine.checkpoint
import engine.logger
import engine.session
import train
from core.errors import CheckpointError
from engine.checkpoint import load_checkpoint
from engine.cli import status_of
from engine.resume import load_resume_state
from engine.trainer import Trainer

from conftest import REPO, SMOKE, train_env

TINY = [*SMOKE, "data.num_train=128", "data.num_test=64", "train.batch_size=32"]


def train_into(run_dir, *overrides: str) -> int:
    return status_of(train.main, ["--config", "configs/quickstart.yaml", *TINY, *overrides, "--run-dir", str(run_dir)])


def one_error_line(capfd) -> str:
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def fail_config_write(monkeypatch):
    real = engine.session.atomic_write

    def atomic_write(path, write):
        return real(path, full_disk) if path.name == "config.yaml" else real(path, write)

    monkeypatch.setattr(engine.session, "atomic_write", atomic_write)


def fail_log_write(monkeypatch):
    real_open = builtins.open

    class FullFile:
        def __init__(self, handle):
            self.handle = handle

        write = flush = staticmethod(full_disk)

        def close(self):
            self.handle.close()

    monkeypatch.setattr(engine.logger, "open", lambda *a, **k: FullFile(real_open(*a, **k)), raising=False)


def fail_event_write(monkeypatch):
    from tensorboard.summary.writer import record_writer

    monkeypatch.setattr(record_writer.RecordWriter, "write", full_disk)  # in TensorBoard's writer thread


@pytest.mark.parametrize(
    "fail, writing",
    [
        (fail_config_write, "config.yaml"),
        (fail_log_write, "its log or TensorBoard events"),
        (fail_event_write, "its log or TensorBoard events"),
    ],
)
def test_a_full_disk_at_the_first_writes_is_one_line(tmp_path, monkeypatch, capfd, fail, writing):
    run_dir = tmp_path / "run"
    fail(monkeypatch)
    assert train_into(run_dir, "train.epochs=1") == 2
    line = one_error_line(capfd)
    assert line.startswith(f"error: no space left on the disk holding {run_dir} (writing ") and writing in line, line
    assert "no epoch had finished, so there is no checkpoint" in line
    assert not (run_dir / ".lock").exists()


def during_epoch_2(monkeypatch, fault):
    """Call ``fault()`` as epoch 2 ends, before it is recorded (epoch 1's checkpoint is written)."""
    record = Trainer._record

    def recording(self, epoch, *args):
        if epoch == 2:
            fault(self.run_dir)
        return record(self, epoch, *args)

    monkeypatch.setattr(Trainer, "_record", recording)


def test_the_run_directory_deleted_while_training_is_one_line(tmp_path, monkeypatch, capfd):
    run_dir = tmp_path / "run"
    during_epoch_2(monkeypatch, shutil.rmtree)
    assert train_into(run_dir) == 2
    line = one_error_line(capfd)
    assert line.startswith(f"error: {run_dir} was deleted, or made read-only, while the run trained (writing "), line
    assert "the directory is gone, and its last.pt with it" in line


@pytest.mark.parametrize("where", ["checkpoint", "log"])
def test_the_run_directory_made_read_only_while_training_is_one_line_and_keeps_last(
    tmp_path, monkeypatch, capfd, where
):
    """A read-only filesystem (root may write in a chmod-ed directory, so the fault is injected)."""
    run_dir = tmp_path / "run"

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    def make_read_only(directory):
        if where == "checkpoint":
            monkeypatch.setattr(
                engine.checkpoint.tempfile,
                "mkstemp",
                lambda *a, dir, **k: (_ for _ in ()).throw(
                    OSError(errno.EROFS, "Read-only file system", str(dir / ".last.pt.x.tmp"))
                ),
            )
        else:
            monkeypatch.setattr(engine.logger.RunLogger, "flush", read_only)

    during_epoch_2(monkeypatch, make_read_only)
    assert train_into(run_dir) == 2
    line = one_error_line(capfd)
    assert f"error: {run_dir} was deleted, or made read-only, while the run trained" in line, line
    assert f"Read-only file system); {run_dir / 'last.pt'} is intact and holds the last finished epoch" in line
    # The checkpoint of epoch 2 failed, or was written before the log's flush failed.
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == (1 if where == "checkpoint" else 2)


def test_a_bug_writing_elsewhere_keeps_its_traceback(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"

    def elsewhere(directory):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(tmp_path / "no" / "such"))

    during_epoch_2(monkeypatch, elsewhere)
    with pytest.raises(FileNotFoundError):
        train.main(["--config", "configs/quickstart.yaml", *TINY, "--run-dir", str(run_dir)])


@pytest.mark.parametrize(
    "error",
    [
        FileNotFoundError(errno.ENOENT, "No such file or directory", "/data/imagenet/train/n01/x.JPEG"),
        PermissionError(errno.EACCES, "Permission denied", "/data/imagenet/train"),
        OSError(errno.ENOSPC, "No space left on device"),  # e.g. a dataset download into another disk
    ],
)
def test_an_os_error_before_the_run_directory_exists_is_not_taken_for_one_in_it(tmp_path, monkeypatch, error):
    """The run directory's fault lines are for writes into it: an OSError while the experiment is built (the
    data, a download) keeps its own traceback, and no run directory appears."""

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(engine.session, "build_experiment", fail)
    run_dir = tmp_path / "run"
    with pytest.raises(type(error)) as raised:
        train.main(["--config", "configs/quickstart.yaml", *TINY, "--run-dir", str(run_dir)])
    assert raised.value is error and not run_dir.exists()


def test_a_one_process_dlb_checkpoint_resumed_by_two_is_one_line(tmp_path):
    run_dir = tmp_path / "run"
    assert train_into(run_dir, "loss.terms=[ce,dlb]", "train.epochs=1") == 0
    assert len(load_checkpoint(run_dir / "last.pt")["rank_plan"]) == 1
    with pytest.raises(CheckpointError, match=r"from 1 processes; resume it with 1 \(torchrun --nproc_per_node 1\)"):
        load_resume_state(run_dir / "last.pt", world_size=2)


def test_a_user_error_under_torchrun_is_not_recorded_as_a_traceback(tmp_path, monkeypatch):
    """torchrun prints what @record wrote for a failed process: a bad input must leave nothing there."""
    error_file = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
    code = status_of(train.main, ["--config", "configs/quickstart.yaml", "train.epochs=-1"])
    assert code == 2 and not error_file.exists()


SLOW_SHUTDOWN = """
import sys, time
import engine.trainer, train
from engine.cli import exit_with
finish = engine.trainer.Trainer._finish
def slow_finish(self, stopped):
    print("shutting down", flush=True)
    time.sleep(60)
    return finish(self, stopped)
engine.trainer.Trainer._finish = slow_finish
sys.argv[0] = "train.py"
exit_with(train.main)
"""


def test_a_second_ctrl_c_during_the_shutdown_is_one_line(tmp_path):
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SLOW_SHUTDOWN,
            "--config",
            "configs/quickstart.yaml",
            *TINY,
            "train.epochs=3",
            "--run-dir",
            str(run_dir),
        ],
        cwd=REPO,
        env=train_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in process.stdout:
            if line.startswith("epoch 1/3"):
                process.send_signal(signal.SIGINT)
            if line.startswith("shutting down"):
                process.send_signal(signal.SIGINT)
                break
        stderr = process.communicate(timeout=120)[1]
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert stderr.strip().splitlines()[-1].startswith("error: a second Ctrl-C: stopped at once"), stderr
    assert load_checkpoint(run_dir / "last.pt")["epoch"] >= 1
