"""The project as installed (pip install -e ., pyproject.toml): every command runs as ``python FILE`` from any
directory, importing the project's packages as installed, and no file of the scripts or the tests puts
anything on sys.path itself."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import REPO, train_env

QUICKSTART = str(REPO / "configs/quickstart.yaml")
# Each entry point with a bad argument: checked before any work, so the run costs an interpreter start.
COMMANDS = {
    "train.py": (["--config", "missing.yaml"], "missing.yaml"),
    "scripts/evaluate.py": (["missing.pt"], "checkpoint not found: missing.pt"),
    "scripts/visualize.py": (["missing.pt", "--out", "figures", "--images", "0"], "--images must be at least 1"),
    "scripts/collect_results.py": (["--metrics", "acc1,top5"], "--metrics takes a list of acc1, ece, nll, aurc"),
    "scripts/sweep.py": (["--config", QUICKSTART, "--grid", "train.lr"], "--grid 'train.lr' must look like"),
    "scripts/launch.py": (["-", "--jobs", "0"], "--jobs must be >= 1, got 0"),
    "scripts/benchmark.py": (["--rounds", "0"], "--rounds must be >= 1"),
}
PATH_EDITS = ("insert", "append", "extend", "remove", "pop", "clear")


def test_every_command_runs_from_another_directory_and_reports_bad_input_in_one_line(tmp_path):
    """The real processes, started together: exit status 2 and one ``error:`` line (argparse's usage
    before it), no traceback."""
    processes = {
        name: subprocess.Popen(
            [sys.executable, str(REPO / name), *args],
            cwd=tmp_path,
            env=train_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (args, _) in COMMANDS.items()
    }
    for name, process in processes.items():
        out, err = process.communicate(timeout=120)
        *usage, last = err.strip().splitlines()
        assert process.returncode == 2 and out == "", f"{name}: {err}"
        assert last.startswith(("error: ", f"{Path(name).name}: error: ")) and COMMANDS[name][1] in last, err
        assert all(line.startswith(("usage: ", " ")) for line in usage), err
    assert list(tmp_path.iterdir()) == []


def sys_path_edits(source: str) -> list[int]:
    """The lines of ``source`` that change sys.path: a call of one of its list methods, or an assignment
    to it or into it."""

    def is_sys_path(node) -> bool:
        return (
            isinstance(node, ast.Attribute)
            and node.attr == "path"
            and isinstance(node.value, ast.Name)
            and node.value.id == "sys"
        )

    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in PATH_EDITS:
            if is_sys_path(node.func.value):
                lines.append(node.lineno)
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, (ast.AugAssign, ast.AnnAssign))
            else []
        )
        for target in targets:
            for part in ast.walk(target):
                if is_sys_path(part) or (isinstance(part, ast.Subscript) and is_sys_path(part.value)):
                    lines.append(node.lineno)
    return sorted(set(lines))


def test_no_script_or_test_edits_sys_path():
    edits = {
        str(path.relative_to(REPO)): sys_path_edits(path.read_text())
        for folder in ("scripts", "tests")
        for path in sorted((REPO / folder).rglob("*.py"))
    }
    assert {path: lines for path, lines in edits.items() if lines} == {}


def test_the_check_finds_each_kind_of_edit():
    source = (
        "import sys\nsys.path.insert(0, 'a')\nsys.path.append('b')\nsys.path[0] = 'c'\nsys.path = []\n"
        "sys.path += ['d']\nprint(sys.path)\n"
    )
    assert sys_path_edits(source) == [2, 3, 4, 5, 6]
