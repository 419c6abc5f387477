"""Fault injection: real training subprocesses are killed (SIGKILL, SIGTERM) at chosen moments and
resumed with the same command; with train.deterministic=true the resumed run must end bit-identical
to an uninterrupted one. Also: atomic checkpoint writes, non-finite losses and the run-directory lock.

The kill moments come from what the run itself prints, never from guessed sleeps: an epoch line on
stdout (printed just before that epoch's checkpoint is written) or the progress bar, which tqdm draws
when stderr is a terminal, so the tests give the run a pseudo-terminal to read the step count from.
"""

from __future__ import annotations

import fcntl
import math
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from core.errors import RunDirError
from engine.checkpoint import load_checkpoint, remove_unfinished_writes
from engine.run_dir import RunLock

from conftest import REPO, SMOKE, read_metrics, run_train, run_train_with_fault, start_train, train_command, train_env
from in_process import Finished

EPOCHS = 2
# Deterministic, lr drop and Tf-FD warm-up across the epoch boundary, so a resume must restore the
# optimizer, scheduler and epoch counter exactly to match; 8 steps per epoch.
FAULT = [
    *SMOKE,
    f"train.epochs={EPOCHS}",
    "train.deterministic=true",
    "data.num_train=256",
    "train.batch_size=32",
    "train.milestones=[1]",
    "loss.tffd.warmup_epochs=2",
]
TIMING_KEYS = {"epoch_time_s", "images_per_s", "wall_time_s"}  # the only fields a resume may change
WATCHDOG_S = 300  # a run that hangs is killed and the test fails instead of blocking the suite


# ---------------------------------------------------------------- helpers
@contextmanager
def watchdog(process: subprocess.Popen):
    timer = threading.Timer(WATCHDOG_S, process.kill)
    timer.start()
    try:
        yield process
    finally:
        timer.cancel()
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def wait_for_line(process: subprocess.Popen, pattern: str) -> None:
    """Read the run's stdout until a line matches ``pattern``."""
    for line in process.stdout:
        if re.search(pattern, line):
            return
    raise AssertionError(
        f"train.py exited {process.wait()} before printing {pattern!r}: {process.stderr.read()[-2000:]}"
    )


def start_with_terminal(*args: str) -> tuple[subprocess.Popen, int]:
    """Start train.py with stderr on a pseudo-terminal, so tqdm draws its progress bar there."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))  # tqdm draws nothing 0 wide
    process = subprocess.Popen(
        train_command(*args), cwd=REPO, env=train_env(), stdout=subprocess.PIPE, stderr=slave, text=True
    )
    os.close(slave)
    return process, master


def wait_for_mid_epoch(process: subprocess.Popen, terminal: int, epoch: int) -> None:
    """Read the progress bar until it shows ``epoch`` with some but not all of its steps done."""
    bar = re.compile(rf"epoch {epoch}/{EPOCHS}:\s*\d+%\|[^|]*\|\s*(\d+)/(\d+)")
    seen = ""
    while True:
        if select.select([terminal], [], [], 1.0)[0]:
            try:
                seen = (seen + os.read(terminal, 4096).decode(errors="replace"))[-8192:]
            except OSError:  # the run closed its terminal: it ended
                pass
            if any(0 < int(done) < int(total) for done, total in bar.findall(seen)):
                return
        if process.poll() is not None:
            raise AssertionError(f"train.py exited {process.returncode} before epoch {epoch} was half done: {seen}")


def signal_mid_epoch(run_dir: Path, signum: int, epoch: int) -> tuple[subprocess.Popen, str]:
    """Start a FAULT run, send ``signum`` while ``epoch`` is partly done; the ended process and its stdout."""
    process, terminal = start_with_terminal(*FAULT, "--run-dir", str(run_dir))
    try:
        with watchdog(process):
            wait_for_mid_epoch(process, terminal, epoch)
            process.send_signal(signum)
            stdout, _ = process.communicate()
    finally:
        os.close(terminal)
    return process, stdout


def checkpoint_epoch(run_dir: Path) -> int:
    return int(load_checkpoint(run_dir / "last.pt")["epoch"])


def without_timing(metrics: dict) -> dict:
    out = {k: v for k, v in metrics.items() if k not in TIMING_KEYS}
    out["history"] = [{k: v for k, v in epoch.items() if k not in TIMING_KEYS} for epoch in metrics["history"]]
    return out


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """Final weights bit-identical (last.pt and best.pt) and metrics equal but for timings."""
    for name in ("last.pt", "best.pt"):
        ours, theirs = load_checkpoint(run_dir / name)["model"], load_checkpoint(reference / name)["model"]
        assert ours.keys() == theirs.keys()
        different = [key for key in ours if not torch.equal(ours[key], theirs[key])]
        assert not different, f"{name}: tensors differ from the uninterrupted run: {different[:5]}"
    assert without_timing(read_metrics(run_dir)) == without_timing(read_metrics(reference))
    # TensorBoard shows the same curves: the points a killed run wrote after its last checkpoint are
    # purged, not shown twice beside the resumed run's.
    for tag in ("train/loss", "train/acc1", "test/acc1", "epoch/train_loss", "hparam/best_acc1"):
        assert scalar_points(run_dir, tag) == scalar_points(reference, tag), tag


def hparams_tags(run_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    events = EventMultiplexer()
    events.AddRunsFromDirectory(str(run_dir))
    events.Reload()
    return set(events.PluginRunToTagToContent("hparams").get(".", {}))


def scalar_points(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of one scalar as TensorBoard shows it, over all of the run's event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [(event.step, round(event.value, 4)) for event in events.Scalars(tag)]


def test_a_resumed_runs_event_file_sorts_after_the_killed_runs(tmp_path):
    """TensorBoard reads event files in name order; a resumed run's, made within the second of the killed run's
    and by a process of a lower pid, must still come after it, or the purge drops the points it should keep."""
    from engine.logger import RunLogger

    killed = tmp_path / f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.999999999.0"
    killed.write_bytes(b"")
    logger = RunLogger(tmp_path, purge_step=5)
    logger.scalars({"loss": 1.0}, 5)
    logger.close()
    names = sorted(path.name for path in tmp_path.glob("events.out.tfevents.*"))
    assert len(names) == 2 and names[0] == killed.name


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run every interrupted one must reproduce exactly."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    run_train(*FAULT, "--run-dir", str(run_dir), check=True)
    return run_dir


# ---------------------------------------------------------------- SIGKILL and exact resume
def test_sigkill_mid_epoch_then_resume_is_exact(tmp_path, reference):
    run_dir = tmp_path / "run"
    process, _ = signal_mid_epoch(run_dir, signal.SIGKILL, epoch=2)
    assert process.returncode == -signal.SIGKILL
    assert checkpoint_epoch(run_dir) == 1  # killed inside epoch 2: its partial progress is lost
    assert read_metrics(run_dir)["finished"] is False
    assert f"pid {process.pid}" in (run_dir / ".lock").read_text()  # left behind by the dead run: stale
    assert "_hparams_/session_start_info" in hparams_tags(run_dir)  # a killed run has its HParams row too
    unfinished = run_dir / ".last.pt.k1ll3d.tmp"  # as a kill in the middle of a checkpoint write leaves it
    unfinished.write_bytes(b"half of a checkpoint")
    result = run_train(*FAULT, "--run-dir", str(run_dir), check=True)
    assert "(resume)" in result.stdout and "resuming after epoch 1" in result.stdout
    assert not (run_dir / ".lock").exists() and not unfinished.exists()
    assert_same_run(run_dir, reference)


def test_sigkill_around_checkpoint_write_then_resume_is_exact(tmp_path, reference):
    run_dir = tmp_path / "run"
    with watchdog(start_train(*FAULT, "--run-dir", str(run_dir))) as process:
        wait_for_line(process, r"^epoch 1/")  # printed right before epoch 1's last.pt is written
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL
    # Whatever the moment, last.pt is absent (killed before the rename) or a whole, loadable epoch 1.
    saved = (run_dir / "last.pt").exists()
    if saved:
        assert checkpoint_epoch(run_dir) == 1
    result = run_train(*FAULT, "--run-dir", str(run_dir), check=True)
    assert ("(resume)" if saved else "(restart)") in result.stdout
    assert read_metrics(run_dir)["finished"] is True
    assert_same_run(run_dir, reference)


def test_kill_during_atomic_write_keeps_previous_file(tmp_path):
    """SIGKILL a process halfway through writing a checkpoint: the old last.pt stays whole."""
    target = tmp_path / "last.pt"
    previous = {"epoch": 1, "model": {"w": torch.arange(4.0)}}
    torch.save(previous, target)
    writer = (
        "import sys, time\n"
        "from engine.checkpoint import atomic_write\n"
        "def write(handle):\n"
        "    handle.write(b'half of a new checkpoint'); handle.flush()\n"
        "    print('writing', flush=True); time.sleep(600)\n"
        f"atomic_write({str(target)!r}, write)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", writer],
        cwd=REPO,
        env=train_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with watchdog(process):
        wait_for_line(process, "^writing")
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL
    state = load_checkpoint(target)
    assert state["epoch"] == 1 and torch.equal(state["model"]["w"], previous["model"]["w"])
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert len(leftovers) == 1 and leftovers[0].startswith(".last.pt.")  # the partial file never took the name
    remove_unfinished_writes(tmp_path)  # what a run does once it holds the directory's lock
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


# ---------------------------------------------------------------- SIGTERM: graceful stop, same command resumes
def test_sigterm_stops_cleanly_and_same_command_resumes(tmp_path, reference):
    run_dir = tmp_path / "run"
    process, stdout = signal_mid_epoch(run_dir, signal.SIGTERM, epoch=2)
    assert process.returncode == 128 + signal.SIGTERM == 143
    assert "stopped by SIGTERM after 1 finished epochs" in stdout and "Run the same command again" in stdout
    assert "Traceback" not in stdout
    assert checkpoint_epoch(run_dir) == 1
    metrics = read_metrics(run_dir)
    assert metrics["finished"] is False and metrics["epochs_done"] == 1 and metrics["stopped_by"] == "SIGTERM"
    assert "stopped by SIGTERM" in (run_dir / "log.txt").read_text()
    assert not (run_dir / ".lock").exists()  # a clean exit releases the lock

    checkpoint = (run_dir / "last.pt").read_bytes()
    other = run_train(*FAULT, "train.lr=0.1", "--run-dir", str(run_dir))
    assert other.returncode == 2 and other.stderr.splitlines() == [
        f"error: {run_dir} holds an unfinished run of another config (train.lr: 0.05 -> 0.1); "
        f"pass --overwrite to replace it or choose another --run-dir"
    ]
    assert (run_dir / "last.pt").read_bytes() == checkpoint

    result = run_train(*FAULT, "--run-dir", str(run_dir), check=True)
    assert "(resume)" in result.stdout and "resuming after epoch 1" in result.stdout
    assert_same_run(run_dir, reference)


# ---------------------------------------------------------------- non-finite losses
# Epoch 1 trains normally; the cross-entropy of step 6 (the 2nd of 4 in epoch 2) is made NaN.
NAN_IN_EPOCH_2 = [*SMOKE, "data.num_train=128", "train.batch_size=32", "train.epochs=3"]


def run_with_nan(*args: str) -> Finished:
    """train.py with a NaN loss at step 6."""
    return run_train_with_fault("nan", 6, *NAN_IN_EPOCH_2, *args)


def test_nonfinite_loss_stops_with_epoch_step_and_term(tmp_path):
    run_dir = tmp_path / "run"
    result = run_with_nan("--run-dir", str(run_dir))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.fullmatch(
        r"error: non-finite loss at epoch 2, step \d+ \(bad: (ce|tffd_inter|tffd_intra)(, \w+)*\);"
        r".*last good checkpoint is kept in .*last\.pt.*train\.nonfinite=skip.*",
        lines[0],
    ), lines[0]
    state = load_checkpoint(run_dir / "last.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    metrics = read_metrics(run_dir)
    assert metrics["finished"] is False and metrics["epochs_done"] == 1
    assert "non-finite loss at epoch 2" in (run_dir / "log.txt").read_text()


def test_nonfinite_skip_continues_to_the_end(tmp_path):
    run_dir = tmp_path / "run"
    result = run_with_nan("train.nonfinite=skip", "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert re.findall(r"epoch \d+ step \d+: non-finite loss, step skipped \(ce\)", result.stdout) == [
        "epoch 2 step 2: non-finite loss, step skipped (ce)"
    ]
    metrics = read_metrics(run_dir)
    assert metrics["finished"] is True and metrics["epochs_done"] == 3
    # The skipped step never reached the weights: every later step trains, every loss is finite.
    assert all(math.isfinite(epoch["train_loss"]) for epoch in metrics["history"])


# ---------------------------------------------------------------- the run-directory lock
def test_second_run_on_same_directory_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    args = [*SMOKE, "--run-dir", str(run_dir)]
    with watchdog(start_train(*args)) as first:
        wait_for_line(first, r"^epoch 1/")  # holds the lock and handles SIGTERM by now
        first.send_signal(signal.SIGSTOP)  # alive and holding the lock, but not racing to the end meanwhile
        second = run_train(*args)
        first.send_signal(signal.SIGCONT)
        first.send_signal(signal.SIGTERM)
        first.communicate()
    assert second.returncode == 2 and second.stdout == ""
    assert second.stderr.strip().splitlines() == [second.stderr.strip()]
    assert f"another run ({socket.gethostname()} pid {first.pid}) is writing to {run_dir}" in second.stderr
    assert first.returncode == 128 + signal.SIGTERM
    # Nothing of the refused run interleaved with the first one's files.
    assert (run_dir / "log.txt").read_text().count("run directory:") == 1
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert not (run_dir / ".lock").exists()


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stale_lock_of_dead_process_is_taken_over(tmp_path):
    (tmp_path / ".lock").write_text(f"{socket.gethostname()} pid {dead_pid()}\n")
    lock = RunLock(tmp_path)
    lock.acquire()
    assert (tmp_path / ".lock").read_text() == f"{socket.gethostname()} pid {os.getpid()}\n"
    lock.release()
    assert not (tmp_path / ".lock").exists()


def test_lock_of_live_process_is_respected(tmp_path):
    first = RunLock(tmp_path)
    first.acquire()
    holder = f"{socket.gethostname()} pid {os.getpid()}"
    with pytest.raises(RunDirError, match=f"another run \\({holder}\\) is writing to"):
        RunLock(tmp_path).acquire()
    assert (tmp_path / ".lock").read_text() == holder + "\n"
    first.release()
    RunLock(tmp_path).acquire()


@pytest.mark.parametrize("left_behind", ["", "other-host.example.org pid 1\n", "garbage"])
def test_a_lock_file_nobody_holds_never_wedges_the_directory(tmp_path, left_behind):
    """A 0-byte file (a start on a full disk), a SIGKILLed run's file from another host (a requeued
    SLURM job), garbage: without a live holder's OS lock, the next run takes the directory."""
    (tmp_path / ".lock").write_text(left_behind)
    lock = RunLock(tmp_path)
    lock.acquire()
    assert (tmp_path / ".lock").read_text() == f"{socket.gethostname()} pid {os.getpid()}\n"
    lock.release()


def test_a_probe_of_the_lock_never_makes_a_starting_run_fail(tmp_path):
    """A launcher asks who holds a run's lock (RunLock.holder) with a shared lock held for an instant; a run
    that starts in that instant waits it out instead of taking the prober for another run. The probe's
    lock is held here for 50 ms, from another open file, as another process's would be."""
    (tmp_path / ".lock").write_text("")
    probe = os.open(tmp_path / ".lock", os.O_RDONLY)
    fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
    threading.Timer(0.05, lambda: (fcntl.flock(probe, fcntl.LOCK_UN), os.close(probe))).start()
    lock = RunLock(tmp_path)
    lock.acquire()
    assert lock.held and RunLock.holder(tmp_path) == f"{socket.gethostname()} pid {os.getpid()}"
    lock.release()
    assert RunLock.holder(tmp_path) is None
