"""The run directory: where a run writes, whether it starts fresh or resumes, and a lock so two
runs never write into the same directory at once.

A directory holding a finished run is never overwritten without ``--overwrite``; one holding an
unfinished run with the same config is resumed; one holding a run of another config is refused.
"""
from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

from .errors import RunDirError

CONFIG_FILE, METRICS_FILE, LOG_FILE, LAST, BEST, LOCK = (
    "config.yaml", "metrics.json", "log.txt", "last.pt", "best.pt", ".lock",
)
RUN_FILES = (CONFIG_FILE, METRICS_FILE, LOG_FILE, LAST, BEST)
# Keys that say where or how fast a run reads and writes, not what it computes: a resume may change them.
RESUME_MAY_CHANGE = {"data.root", "data.download", "data.num_workers", "train.log_interval", "train.device",
                     "train.eval_batch_size", "teacher.checkpoint"}


def default_run_dir(config_path: str, overrides: list[str]) -> Path:
    """runs/<config path under configs/, without .yaml>[/<overrides>]: the same command, the same dir."""
    path = Path(config_path).with_suffix("")
    parts = path.parts[path.parts.index("configs") + 1:] if "configs" in path.parts else (path.name,)
    run_dir = Path("runs", *parts)
    if overrides:
        run_dir = run_dir / overrides_name(overrides)
    return run_dir


def overrides_name(overrides: list[str]) -> str:
    """A directory name for KEY=VALUE overrides, e.g. ``loss.tffd.lambda_intra=1e-4,train.epochs=2``."""
    return ",".join(re.sub(r"[^A-Za-z0-9_.=+\-]", "_", o) for o in overrides)[:200]


def read_metrics(run_dir: Path) -> dict | None:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def _flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def config_differences(old: dict, new: dict) -> list[str]:
    old_flat, new_flat = _flatten(old), _flatten(new)
    return [f"{key}: {old_flat.get(key)!r} -> {new_flat.get(key)!r}"
            for key in sorted(set(old_flat) | set(new_flat))
            if key not in RESUME_MAY_CHANGE and old_flat.get(key) != new_flat.get(key)]


def check_run_dir(run_dir: Path, overwrite: bool, saved_config: dict | None, new_config: dict) -> str:
    """Decide, without writing anything: 'fresh', 'resume', 'restart' (same config, no epoch finished)
    or 'overwrite'. Raises ``RunDirError``."""
    run_dir = Path(run_dir)
    a_file = next((path for path in (run_dir, *run_dir.parents) if path.exists() and not path.is_dir()), None)
    if a_file is not None:
        raise RunDirError(f"--run-dir {run_dir}: {a_file} is a file, not a directory; choose another path")
    if not run_dir.exists() or not any((run_dir / name).exists() for name in RUN_FILES):
        return "fresh"
    if overwrite:
        return "overwrite"
    metrics = read_metrics(run_dir)
    if metrics and metrics.get("finished"):
        raise RunDirError(
            f"{run_dir} holds a finished run (best top-1 {metrics.get('best_acc1')}%); "
            f"pass --overwrite to replace it or choose another --run-dir"
        )
    if saved_config is not None:
        differences = config_differences(saved_config, new_config)
        if differences:
            raise RunDirError(
                f"{run_dir} holds an unfinished run of another config ({differences[0]}"
                f"{f' and {len(differences) - 1} more' if len(differences) > 1 else ''}); "
                f"pass --overwrite to replace it or choose another --run-dir"
            )
    if not (run_dir / LAST).is_file():
        if saved_config is None:
            raise RunDirError(f"{run_dir} holds files of a run that saved no last.pt; pass --overwrite to start over")
        return "restart"  # stopped or killed in its first epoch: nothing to resume, nothing worth keeping
    return "resume"


class RunLock:
    """An exclusive ``.lock`` file holding host and pid; a lock left by a dead process is taken over."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self.held = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder = self._holder()
                if self._holder_alive(holder):
                    raise RunDirError(
                        f"another run ({holder or 'unknown'}) is writing to {self.path.parent}; wait for it, choose "
                        f"another --run-dir, or delete {self.path} if no run is using that directory"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(f"{socket.gethostname()} pid {os.getpid()}\n")
            self.held = True
            return
        raise RunDirError(f"could not take the lock {self.path}; remove it if no run is using that directory")

    def _holder(self) -> str | None:
        """'<host> pid <pid>' of the lock's holder; '' while it is being written; None once it is gone."""
        try:
            return self.path.read_text().strip()
        except FileNotFoundError:
            return None
        except OSError:
            return ""  # unreadable: treat it as held

    def _holder_alive(self, holder: str | None) -> bool:
        if holder is None:
            return False  # released in the meantime
        try:
            host, _, pid = holder.split()
        except ValueError:
            return True  # being written right now by another process
        if host != socket.gethostname():
            return True  # cannot check another machine: assume it is alive
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def clear_run_files(run_dir: Path) -> None:
    """Remove a previous run's outputs (for --overwrite); the lock stays."""
    run_dir = Path(run_dir)
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for event_file in run_dir.glob("events.out.tfevents.*"):
        event_file.unlink()
