"""README's promises that a file can check: the two-command start, CI running the README's test
command, and every repository path a README command names existing."""
from __future__ import annotations

import re
import subprocess

from conftest import REPO

README = (REPO / "README.md").read_text()


def bash_blocks(text: str) -> list[list[str]]:
    """The command lines of each fenced bash block (comments stripped)."""
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [[line.split("  #")[0].strip() for line in block.splitlines() if line.strip()] for block in blocks]


def test_the_first_commands_are_the_two_make_targets_and_ci_runs_the_second():
    assert bash_blocks(README)[0] == ["make quickstart", "make test"]
    ci = [line for line in (REPO / ".ci/run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == "make test"
    plan = subprocess.run(["make", "-n", "-B", "test"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert plan.splitlines()[-1] == ".venv/bin/python -m pytest -q tests"
    assert "pip install --quiet -r requirements-dev.txt" in plan
    quickstart = subprocess.run(["make", "-n", "-B", "quickstart"], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout
    assert quickstart.splitlines()[-1] == ".venv/bin/python train.py --config configs/quickstart.yaml"


def test_every_repository_path_in_a_readme_command_exists():
    commands = " ".join(line for block in bash_blocks(README) for line in block)
    paths = set(re.findall(r"\b((?:configs|scripts|tests|docs)/[\w./-]+\.(?:yaml|py|sh|md))\b", commands))
    assert len(paths) > 10
    missing = sorted(path for path in paths if "<" not in path and not (REPO / path).is_file())
    assert not missing, missing
