"""--overwrite never leaves the user without the result they had: the old run's files are set aside and
dropped only once the new run has written its first checkpoint. A new run that fails at its first step
(a non-finite loss, an exception), is stopped, or is killed before its first epoch ends gives them back,
the last one when the next run in the directory starts (engine/previous_run.py)."""

from __future__ import annotations

import os
import shutil
import signal

import pytest
from test_faults import FAULT, start_with_terminal, wait_for_mid_epoch, watchdog
from test_run_safety import assert_one_line_refusal, snapshot

import engine.trainer
import train
from engine.cli import status_of
from engine.previous_run import ASIDE, PARTIAL, RESTORING, set_aside, settle

from conftest import run_train, run_train_with_fault


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    run_train(*FAULT, "--run-dir", str(run_dir), check=True)
    return run_dir


@pytest.fixture
def run_dir(finished_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def assert_still_the_finished_run(run_dir, before):
    result = run_train(*FAULT, "--run-dir", str(run_dir))  # the next run: still refused as finished
    assert_one_line_refusal(result, f"{run_dir} holds a finished run")
    assert snapshot(run_dir) == before


def test_an_overwrite_whose_first_step_is_not_finite_gives_the_old_files_back(run_dir):
    before = snapshot(run_dir)
    result = run_train_with_fault("nan", 1, *FAULT, "--run-dir", str(run_dir), "--overwrite")
    assert result.returncode == 1 and "non-finite loss at epoch 1, step 1" in result.stderr, result.stderr
    assert "the previous run's files are back" in result.stdout
    assert_still_the_finished_run(run_dir, before)


def test_an_overwrite_that_raises_at_its_first_step_gives_the_old_files_back(run_dir, monkeypatch):
    before = snapshot(run_dir)

    def broken_step(*args, **kwargs):
        raise RuntimeError("a bug of ours at step 1")

    monkeypatch.setattr(engine.trainer, "compute_losses", broken_step)
    with pytest.raises(RuntimeError, match="a bug of ours"):  # a bug keeps its traceback
        train.main(["--config", "configs/quickstart.yaml", *FAULT, "--run-dir", str(run_dir), "--overwrite"])
    monkeypatch.undo()
    assert_still_the_finished_run(run_dir, before)


def test_an_overwrite_killed_in_its_first_epoch_is_undone_by_the_next_run(run_dir):
    before = snapshot(run_dir)
    process, terminal = start_with_terminal(*FAULT, "--run-dir", str(run_dir), "--overwrite")
    try:
        with watchdog(process):
            wait_for_mid_epoch(process, terminal, 1)
            process.send_signal(signal.SIGKILL)
            process.communicate()
    finally:
        os.close(terminal)
    assert (run_dir / ASIDE).is_dir() and not (run_dir / "best.pt").exists()  # the old files, aside
    assert_still_the_finished_run(run_dir, before)  # the next run put them back first


def test_an_overwrite_that_checkpoints_replaces_the_old_run(run_dir):
    old_best = (run_dir / "best.pt").read_bytes()
    code = status_of(
        train.main,
        ["--config", "configs/quickstart.yaml", *FAULT, "train.epochs=1", "--run-dir", str(run_dir), "--overwrite"],
    )
    assert code == 0
    assert not (run_dir / ASIDE).exists() and (run_dir / "best.pt").read_bytes() != old_best
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".previous")] == []


# Every state a kill can leave the replacement in is settled the same way by the next run.
def fake_run_files(run_dir, tag: str, with_last: bool = True):
    run_dir.mkdir(exist_ok=True)
    for name in ("config.yaml", "log.txt", "metrics.json", "best.pt", *(["last.pt"] if with_last else [])):
        (run_dir / name).write_text(f"{tag} {name}")
    (run_dir / "events.out.tfevents.1.host").write_text(f"{tag} events")


def contents(run_dir):
    return {p.name: p.read_text() for p in run_dir.iterdir() if p.is_file()}


def test_a_kill_while_setting_aside_puts_everything_back(tmp_path):
    fake_run_files(tmp_path, "old")
    before = contents(tmp_path)
    (tmp_path / PARTIAL).mkdir()  # killed after moving two of the files
    for name in ("best.pt", "metrics.json"):
        os.replace(tmp_path / name, tmp_path / PARTIAL / f"{name}.previous")
    assert settle(tmp_path) == "restored"
    assert contents(tmp_path) == before and not (tmp_path / PARTIAL).exists()


def test_a_new_run_without_a_checkpoint_is_undone_and_a_kill_while_undoing_too(tmp_path):
    fake_run_files(tmp_path, "old")
    before = contents(tmp_path)
    set_aside(tmp_path)
    fake_run_files(tmp_path, "new", with_last=False)  # the new run's config, log, events; no checkpoint
    (tmp_path / "events.out.tfevents.2.host").write_text("new events")
    os.replace(tmp_path / ASIDE, tmp_path / RESTORING)  # killed after deleting the new files ...
    for name in (
        "config.yaml",
        "log.txt",
        "metrics.json",
        "best.pt",
        "events.out.tfevents.1.host",
        "events.out.tfevents.2.host",
    ):
        (tmp_path / name).unlink()
    os.replace(tmp_path / RESTORING / "log.txt.previous", tmp_path / "log.txt")  # ... and moving one back
    assert settle(tmp_path) == "restored"
    assert contents(tmp_path) == before and not (tmp_path / RESTORING).exists()


def test_a_new_run_without_a_checkpoint_is_undone(tmp_path):
    fake_run_files(tmp_path, "old")
    before = contents(tmp_path)
    set_aside(tmp_path)
    fake_run_files(tmp_path, "new", with_last=False)
    (tmp_path / "events.out.tfevents.2.host").write_text("new events")
    assert settle(tmp_path) == "restored"
    assert contents(tmp_path) == before


def test_a_new_run_with_a_checkpoint_finishes_the_replacement(tmp_path):
    fake_run_files(tmp_path, "old")
    set_aside(tmp_path)
    fake_run_files(tmp_path, "new")
    after = contents(tmp_path)
    assert settle(tmp_path) == "replaced"
    assert contents(tmp_path) == after and not (tmp_path / ASIDE).exists()
    assert settle(tmp_path) is None
