"""engine/output_paths.py, the one rule for every output path a script takes: never a run's own file (by
name or through a symlink), a file where a file belongs and a directory where a directory belongs, no
dangling symlink or symlink loop on the way. The scripts' own tests try it through each option."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.errors import RunDirError
from engine.output_paths import check_output_dir, check_output_file

RUN_FILES = ["best.pt", "last.pt", "metrics.json", "config.yaml", "log.txt", "events.out.tfevents.1.host.1", ".lock"]


def a_run(root: Path, marker: str) -> Path:
    """A run directory that ``marker`` (config.yaml or last.pt) makes one, with every run file in it."""
    run = root / "run"
    run.mkdir()
    for name in RUN_FILES:
        if name != marker and name in ("config.yaml", "last.pt"):
            continue
        (run / name).write_text(f"the run's {name}")
    return run


@pytest.mark.parametrize("marker", ["config.yaml", "last.pt"])
@pytest.mark.parametrize("name", RUN_FILES)
def test_a_runs_file_is_refused_by_name_and_through_a_symlink(tmp_path, marker, name):
    run = a_run(tmp_path, marker)
    if name in ("config.yaml", "last.pt") and name != marker:
        (run / name).write_text(f"the run's {name}")
    link = tmp_path / "table.md"
    link.symlink_to(run / name)
    for path, via in ((run / name, ""), (link, f" (a link to {run / name})")):
        with pytest.raises(RunDirError, match="only that run writes") as refused:
            check_output_file(path, "--out")
        assert str(refused.value).startswith(f"--out {path}{via} is the run's {name} in {run}")
    assert (run / name).read_text() == f"the run's {name}"


def test_a_runs_file_not_written_yet_is_refused_too(tmp_path):
    run = a_run(tmp_path, "config.yaml")
    (run / "best.pt").unlink()
    with pytest.raises(RunDirError, match="run's best.pt"):
        check_output_file(run / "best.pt", "--json")


def test_a_directory_where_a_runs_file_will_be_written_is_refused(tmp_path):
    run = a_run(tmp_path, "last.pt")  # an unfinished run: no metrics.json yet
    (run / "metrics.json").unlink()
    with pytest.raises(RunDirError, match="is the run's metrics.json"):
        check_output_dir(run / "metrics.json", "job")
    assert not (run / "metrics.json").exists()


def test_the_same_names_outside_a_run_and_other_names_inside_one_are_fine(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")  # e.g. an earlier benchmark --json: no run beside it
    check_output_file(tmp_path / "metrics.json", "--json")
    check_output_file(a_run(tmp_path, "last.pt") / "table.md", "--out")


def test_a_figure_directory_holding_a_link_to_a_runs_file_is_refused(tmp_path):
    run = a_run(tmp_path, "config.yaml")
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "salience.png").symlink_to(run / "best.pt")
    with pytest.raises(RunDirError, match=f"--plots {figures / 'salience.png'} \\(a link to {run / 'best.pt'}\\)"):
        check_output_dir(figures, "--plots", ("curves.png", "salience.png"))
    check_output_dir(figures, "--plots", ("curves.png",))


@pytest.fixture
def odd_paths(tmp_path) -> dict[str, Path]:
    (tmp_path / "a_file").write_text("keep me")
    (tmp_path / "a_dir").mkdir()
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    return {name: tmp_path / name for name in ("a_file", "a_dir", "dangling", "loop_a")}


@pytest.mark.parametrize(
    "case, message",
    [
        ("a_dir", "{p} is a directory; name a file"),
        ("dangling", "{p} is a symlink to {t}/nowhere, which does not exist"),
        ("loop_a", "{p} leads into a symlink loop"),
        ("a_file/x.json", "{p}: {t}/a_file is a file, not a directory"),
        ("dangling/x.json", "{p}: its directory {t}/dangling is a symlink to {t}/nowhere, which does not exist"),
        ("loop_a/x.json", "{p} leads into a symlink loop"),
        ("missing/x.json", "{p}: its directory {t}/missing does not exist"),
    ],
)
def test_a_file_option_names_what_is_wrong_with_its_path(tmp_path, odd_paths, case, message):
    path = tmp_path / case
    with pytest.raises(RunDirError) as refused:
        check_output_file(path, "--json")
    assert str(refused.value).startswith("--json " + message.format(p=path, t=tmp_path))
    assert (tmp_path / "a_file").read_text() == "keep me" and not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize(
    "case, message",
    [
        ("a_file", "{p} is a file, not a directory; name a directory"),
        ("dangling", "{p} is a symlink to {t}/nowhere, which does not exist"),
        ("loop_a", "{p} leads into a symlink loop"),
        ("a_file/figures", "{p}: {t}/a_file is a file, not a directory"),
        ("dangling/figures", "{p}: {t}/dangling is a symlink to {t}/nowhere, which does not exist"),
        ("loop_a/figures", "{p} leads into a symlink loop"),
    ],
)
def test_a_directory_option_names_what_is_wrong_with_its_path(tmp_path, odd_paths, case, message):
    path = tmp_path / case
    with pytest.raises(RunDirError) as refused:
        check_output_dir(path, "--plots")
    assert str(refused.value).startswith("--plots " + message.format(p=path, t=tmp_path))


def test_directories_that_can_be_made_and_files_in_them_are_fine(tmp_path, odd_paths):
    check_output_dir(tmp_path / "new" / "figures", "--plots")
    check_output_dir(tmp_path / "a_dir", "--plots", ("curves.png",))
    check_output_file(tmp_path / "new" / "run.log", "log", make_parents=True)
    with pytest.raises(RunDirError, match="a_file is a file, not a directory"):
        check_output_file(tmp_path / "a_file" / "run.log", "log", make_parents=True)
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_directory_without_write_permission_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(RunDirError, match="not writable"):
        check_output_file(locked / "table.md", "--out")
    with pytest.raises(RunDirError, match="no permission to write"):
        check_output_dir(locked / "figures", "--plots")
