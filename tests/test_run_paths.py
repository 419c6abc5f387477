"""Where train.py expects a run file (last.pt, best.pt, metrics.json, config.yaml, log.txt, the lock) and
finds a directory, a dangling symlink or a symlink loop, or where --run-dir is a file or a broken link:
one line naming the path, exit 2, before anything is written."""

from __future__ import annotations

import os

import pytest

import train
from engine.cli import status_of

from conftest import SMOKE

TINY = [*SMOKE, "data.num_train=64", "data.num_test=64", "train.batch_size=32", "train.epochs=1"]
NAMES = ["last.pt", "best.pt", "metrics.json", "config.yaml", "log.txt", ".lock"]


def make_directory(path):
    path.mkdir()
    (path / "inside").write_text("kept")
    return "is a directory"


def make_dangling(path):
    path.symlink_to(path.parent / "nowhere")
    return "is a symlink to nothing (dangling)"


def make_loop(path):
    path.symlink_to(path)
    return "is a symlink loop"


def make_link_to_directory(path):
    (path.parent / "elsewhere").mkdir()
    path.symlink_to(path.parent / "elsewhere")
    return "is a symlink to a directory"


def make_fifo(path):
    os.mkfifo(path)
    return "is not a regular file"


KINDS = {
    "directory": make_directory,
    "dangling": make_dangling,
    "loop": make_loop,
    "link to a directory": make_link_to_directory,
    "fifo": make_fifo,
}


def listing(root):
    """Every path under ``root`` with what it is (and a link's target), without following links."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            found[path] = os.readlink(path) if os.path.islink(path) else os.path.isdir(path)
    return found


def train_into(run_dir) -> int:
    return status_of(train.main, ["--config", "configs/quickstart.yaml", *TINY, "--run-dir", str(run_dir)])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", NAMES)
def test_a_run_file_that_is_not_a_file_is_one_line_before_anything_is_written(tmp_path, capfd, name, kind):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    what = KINDS[kind](run_dir / name)
    before = listing(tmp_path)
    assert train_into(run_dir) == 2
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {run_dir / name} {what}, where the run keeps its {name}"), (
        lines
    )
    assert listing(tmp_path) == before


@pytest.mark.parametrize("kind", ["file", "dangling", "loop", "dangling parent"])
def test_a_run_dir_that_is_not_a_directory_is_one_line(tmp_path, capfd, kind):
    run_dir = tmp_path / "run"
    if kind == "file":
        run_dir.write_text("a file")
        named, what = run_dir, "is a file, not a directory"
    elif kind == "dangling parent":
        (tmp_path / "parent").symlink_to(tmp_path / "nowhere")
        run_dir = tmp_path / "parent" / "run"
        named, what = tmp_path / "parent", "is a symlink to nothing (dangling)"
    else:
        named, what = run_dir, KINDS[kind](run_dir).removeprefix("is ")
        what = f"is {what}"
    before = listing(tmp_path)
    assert train_into(run_dir) == 2
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --run-dir {run_dir}: {named} {what}"), lines
    assert listing(tmp_path) == before
