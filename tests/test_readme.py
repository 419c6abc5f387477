"""README's promises that a file can check: the two-command start, CI running the README's test
command, and every repository path a README command names existing."""

from __future__ import annotations

import os
import re
import subprocess

from conftest import REPO

README = (REPO / "README.md").read_text()


def bash_blocks(text: str) -> list[list[str]]:
    """The command lines of each fenced bash block (comments stripped)."""
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [[line.split("  #")[0].strip() for line in block.splitlines() if line.strip()] for block in blocks]


def make_plan(target: str) -> str:
    """What ``make TARGET`` would run from scratch; run under ``make test`` itself (CI), so without the
    outer make's variables and directory messages."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    return subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", target],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_the_first_commands_are_the_two_make_targets_and_ci_runs_the_second():
    assert bash_blocks(README)[0] == ["make quickstart", "make test"]
    ci = [line for line in (REPO / ".ci/run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == "make test"
    plan = make_plan("test")
    assert plan.splitlines()[-1] == ".venv/bin/python -m pytest -q -n 2 --dist loadfile tests"
    assert "pip install --quiet -r requirements-dev.txt" in plan
    quickstart = make_plan("quickstart")
    assert quickstart.splitlines()[-1] == ".venv/bin/python train.py --config configs/quickstart.yaml"


def test_every_repository_path_in_a_readme_command_exists():
    commands = " ".join(line for block in bash_blocks(README) for line in block)
    paths = set(re.findall(r"\b((?:configs|scripts|tests|docs)/[\w./-]+\.(?:yaml|py|sh|md))\b", commands))
    assert len(paths) > 10
    missing = sorted(path for path in paths if "<" not in path and not (REPO / path).is_file())
    assert not missing, missing
