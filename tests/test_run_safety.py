"""No fault or bad input loses a result: a run directory that holds one is never cleared without
--overwrite, the decision is taken again under the lock, and a damaged run file is one line that says
which file and how to recover, with nothing written before it."""

from __future__ import annotations

import json
import shutil

import pytest

import engine.session
import train
from engine.cli import status_of

from conftest import SMOKE, run_train
from in_process import Finished

TINY = [*SMOKE, "data.num_train=128", "data.num_test=64", "train.batch_size=32"]


def snapshot(run_dir):
    return {path.name: path.read_bytes() for path in sorted(run_dir.iterdir())}


def assert_one_line_refusal(result: Finished, *fragments: str) -> None:
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 2-epoch run directory, copied by each test that damages it."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    run_train(*TINY, "--run-dir", str(run_dir), check=True)
    return run_dir


def copy_of(run_dir, tmp_path, unfinished: bool = False):
    """A copy of ``run_dir``; with ``unfinished``, its metrics say it stopped after epoch 1."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    if unfinished:
        metrics = json.loads((copy / "metrics.json").read_text())
        metrics.update(finished=False, epochs_done=1)
        (copy / "metrics.json").write_text(json.dumps(metrics))
    return copy


def test_best_checkpoint_is_kept_when_last_is_lost(finished_run, tmp_path):
    run_dir = copy_of(finished_run, tmp_path, unfinished=True)
    (run_dir / "last.pt").unlink()
    before = snapshot(run_dir)
    result = run_train(*TINY, "--run-dir", str(run_dir))
    assert_one_line_refusal(
        result,
        f"{run_dir} has no last.pt to resume from but holds best.pt and metrics.json with 1 finished epochs",
        "--overwrite",
    )
    assert snapshot(run_dir) == before


def test_a_run_that_finished_while_this_one_was_building_is_not_overwritten(tmp_path, monkeypatch, capfd):
    """The first decision ("fresh") is taken again under the lock, after a slow build, when another
    run has finished the directory meanwhile."""
    run_dir = tmp_path / "run"
    build = engine.session.build_experiment

    def slow_build(config, dist):
        monkeypatch.setattr(engine.session, "build_experiment", build)  # the other run builds as usual
        run_train(*TINY, "--run-dir", str(run_dir), check=True)  # the other run, finishing meanwhile
        return build(config, dist)

    monkeypatch.setattr(engine.session, "build_experiment", slow_build)
    code = status_of(train.main, ["--config", "configs/quickstart.yaml", *TINY, "--run-dir", str(run_dir)])
    err = capfd.readouterr().err
    assert code == 2 and f"{run_dir} holds a finished run" in err, err
    assert json.loads((run_dir / "metrics.json").read_text())["finished"] is True
    assert not (run_dir / ".lock").exists()


@pytest.mark.parametrize(
    "name, damage, message",
    [
        ("metrics.json", b"[1, 2]\n", "metrics.json is damaged (a JSON list, not an object)"),
        ("metrics.json", b'{"best_acc1": 5', "metrics.json is damaged (not JSON: "),
        ("metrics.json", b"\xff\xfe{}", "metrics.json is damaged (not UTF-8 text)"),
        ("config.yaml", b"seed: \xff\n", "config.yaml is damaged ("),
        ("config.yaml", b"", "config.yaml is damaged ("),
        ("last.pt", None, "last.pt is corrupt, truncated or not a PyTorch checkpoint"),
    ],
)
def test_a_damaged_run_file_is_one_line_and_nothing_is_written(finished_run, tmp_path, name, damage, message):
    run_dir = copy_of(finished_run, tmp_path, unfinished=True)
    path = run_dir / name
    path.write_bytes(damage if damage is not None else path.read_bytes()[:1000])  # None: truncated
    before = snapshot(run_dir)
    result = run_train(*TINY, "--run-dir", str(run_dir))
    assert_one_line_refusal(result, f"{path}", message, "--overwrite")
    assert snapshot(run_dir) == before, "nothing appended or created before the error"


def test_overwrite_recovers_a_damaged_directory(finished_run, tmp_path):
    run_dir = copy_of(finished_run, tmp_path, unfinished=True)
    (run_dir / "metrics.json").write_bytes(b"garbage")
    run_train(*TINY, "--run-dir", str(run_dir), "--overwrite", check=True)
    assert json.loads((run_dir / "metrics.json").read_text())["finished"] is True


def test_a_full_disk_is_one_line_keeps_the_last_checkpoint_and_leaves_no_lock(tmp_path, monkeypatch, capfd):
    """The disk fills up while epoch 2's checkpoint is written (torch.save fails as a write() does)."""
    import errno

    import torch

    from engine.checkpoint import load_checkpoint

    real_save, saves = torch.save, []

    def save(obj, f, *args, **kwargs):
        saves.append(1)
        if len(saves) == 2:
            f.write(b"the first bytes")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    run_dir = tmp_path / "run"
    code = status_of(train.main, ["--config", "configs/quickstart.yaml", *TINY, "--run-dir", str(run_dir)])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0] == (
        f"error: no space left on the disk holding {run_dir} (writing {run_dir / 'last.pt'}); "
        f"{run_dir / 'last.pt'} is intact and holds the last finished epoch. Free some space and run "
        f"the same command again"
    )
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 1
    assert not (run_dir / ".lock").exists() and not list(run_dir.glob(".*.tmp"))
