"""Finding and reading runs: every directory under the roots that holds a config.yaml is a run; its typed
resolved config (read through the bounded loader) and its metrics.json, if it has finished an epoch. A run
whose config.yaml or metrics.json cannot be read is skipped with a one-line warning."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from core.errors import UserError
from core.yaml_files import read_yaml
from engine.config import config_from_dict
from engine.run_dir import CONFIG_FILE, read_metrics


@dataclass
class Run:
    run_dir: Path
    seed: int
    metrics: dict | None

    @property
    def finished(self) -> bool:
        return bool(self.metrics and self.metrics.get("finished"))

    def progress(self) -> str:
        if not self.metrics:
            return f"seed {self.seed}: no epoch yet"
        return f"seed {self.seed}: epoch {self.metrics.get('epochs_done')}/{self.metrics.get('epochs_total')}"


def find_runs(roots: list[Path]) -> list[tuple[Path, object, dict | None]]:
    """(run dir, its typed resolved config, its metrics or None) for every run under ``roots``."""
    found = []
    for root in roots:
        for config_file in sorted(root.rglob(CONFIG_FILE)):
            run_dir = config_file.parent
            try:
                config = config_from_dict(read_yaml(config_file))  # the loader that bounds every config
            except UserError as error:
                print(f"warning: skipping {run_dir}: unreadable config.yaml ({error})", file=sys.stderr)
                continue
            try:
                metrics = read_metrics(run_dir)
            except UserError as error:
                print(f"warning: skipping {run_dir}: {error}", file=sys.stderr)
                continue
            found.append((run_dir, config, metrics))
    return found
