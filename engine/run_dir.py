"""The run directory: where a run writes, whether it starts fresh or resumes, and a lock so two
runs never write into the same directory at once.

A directory holding a finished run is never overwritten without ``--overwrite``; one holding an
unfinished run with the same config is resumed; one holding a run of another config is refused.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
import stat
import time
from pathlib import Path
from typing import Self

from core.errors import ConfigError, RunDirError
from core.typed_config import flatten, to_dict
from core.yaml_files import read_yaml

from .config import config_from_dict
from .metrics_file import metrics_problem

CONFIG_FILE, METRICS_FILE, LOG_FILE, LAST, BEST, LOCK = (
    "config.yaml",
    "metrics.json",
    "log.txt",
    "last.pt",
    "best.pt",
    ".lock",
)
RUN_FILES = (CONFIG_FILE, METRICS_FILE, LOG_FILE, LAST, BEST)
# Keys that say where or how fast a run reads and writes, not what it computes: a resume may change them.
RESUME_MAY_CHANGE = {
    "data.root",
    "data.download",
    "data.num_workers",
    "train.log_interval",
    "train.device",
    "train.eval_batch_size",
    "teacher.checkpoint",
}


def default_run_dir(config_path: str, overrides: list[str]) -> Path:
    """runs/<config path under configs/, without .yaml>[/<overrides>]: the same command, the same dir."""
    path = Path(config_path).with_suffix("")
    parts = path.parts[path.parts.index("configs") + 1 :] if "configs" in path.parts else (path.name,)
    run_dir = Path("runs", *parts)
    if overrides:
        run_dir = run_dir / overrides_name(overrides)
    return run_dir


def overrides_name(overrides: list[str]) -> str:
    """A directory name for KEY=VALUE overrides, e.g. ``loss.tffd.lambda_intra=1e-4,train.epochs=2``."""
    return ",".join(re.sub(r"[^A-Za-z0-9_.=+\-]", "_", o) for o in overrides)[:200]


def damaged(path: Path, problem: str) -> RunDirError:
    return RunDirError(
        f"{path} is damaged ({problem}); pass --overwrite to start the run over, or move the "
        f"file away if the run's other files are worth keeping"
    )


def read_metrics(run_dir: Path) -> dict | None:
    """``metrics.json`` as a dict, None where there is none; ``RunDirError`` where it is damaged."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise damaged(path, "not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise damaged(path, f"not JSON: {error.msg} at line {error.lineno}") from None
    except RecursionError:  # json's parser recurses once per level of nesting
        raise damaged(path, "nested too deeply to be ours") from None
    except OSError as error:
        raise damaged(path, f"unreadable: {error.strerror}") from None
    if not isinstance(metrics, dict):
        raise damaged(path, f"a JSON {type(metrics).__name__}, not an object")
    problem = metrics_problem(metrics)
    if problem:
        raise damaged(path, problem)
    return metrics


def read_run_config(run_dir: Path) -> dict | None:
    """The resolved ``config.yaml`` a run saved, None where there is none; ``RunDirError`` where damaged."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return None
    if path.stat().st_size == 0:
        raise damaged(path, "empty")
    try:
        return read_yaml(path)
    except ConfigError as error:
        raise damaged(path, str(error).removeprefix(f"{path}: ").removeprefix(f"{path} ")) from None


def current_form(saved: dict) -> dict:
    """A saved config in the current schema's form (``config_from_dict``): an option added since it was saved at
    its default (the behaviour of the code that saved it), one that moved at its new key; as it is where the
    schema refuses it (then every difference shows)."""
    try:
        return to_dict(config_from_dict(saved))
    except ConfigError:
        return saved


def config_differences(old: dict, new: dict) -> list[str]:
    """The keys whose values differ, ``RESUME_MAY_CHANGE`` aside."""
    old_flat, new_flat = flatten(old), flatten(new)
    return [
        f"{key}: {old_flat.get(key)!r} -> {new_flat.get(key)!r}"
        for key in sorted(set(old_flat) | set(new_flat))
        if key not in RESUME_MAY_CHANGE and old_flat.get(key) != new_flat.get(key)
    ]


def check_same_config(run_dir: Path, saved: dict, new: dict) -> None:
    """``RunDirError`` unless a run saved under ``saved`` may resume under ``new`` (``RESUME_MAY_CHANGE`` aside).
    ``saved`` is read as the current schema reads it: an option that moved since is found at its new key, and one
    added since at its default."""
    differences = config_differences(current_form(saved), new)
    if differences:
        raise RunDirError(
            f"{run_dir} holds an unfinished run of another config ({differences[0]}"
            f"{f' and {len(differences) - 1} more' if len(differences) > 1 else ''}); "
            f"pass --overwrite to replace it or choose another --run-dir"
        )


def check_run_dir(run_dir: Path, overwrite: bool, new_config: dict) -> str:
    """Decide, without writing anything: 'fresh', 'resume', 'restart' (same config, no epoch finished,
    no result) or 'overwrite'. Raises ``RunDirError``. The session decides before it builds anything
    and again once it holds the directory's lock, since another run may have written there meanwhile."""
    run_dir = Path(run_dir)
    if not run_dir.exists() or not any((run_dir / name).exists() for name in RUN_FILES):
        return "fresh"
    if overwrite:
        return "overwrite"
    metrics = read_metrics(run_dir)
    saved_config = read_run_config(run_dir)
    if metrics and metrics.get("finished"):
        raise RunDirError(
            f"{run_dir} holds a finished run (best top-1 {metrics.get('best_acc1')}%); "
            f"pass --overwrite to replace it or choose another --run-dir"
        )
    if saved_config is not None:
        check_same_config(run_dir, saved_config, new_config)
    if not (run_dir / LAST).is_file():
        results = held_results(run_dir, metrics)
        if results:
            raise RunDirError(
                f"{run_dir} has no last.pt to resume from but holds {' and '.join(results)}; "
                f"pass --overwrite to start over (losing them), or choose another --run-dir"
            )
        if saved_config is None:
            raise RunDirError(f"{run_dir} holds files of a run that saved no last.pt; pass --overwrite to start over")
        return "restart"  # stopped or killed in its first epoch: nothing to resume, nothing worth keeping
    return "resume"


def held_results(run_dir: Path, metrics: dict | None) -> list[str]:
    """What in ``run_dir`` is a result that only --overwrite may delete."""
    results = []
    if (run_dir / BEST).is_file():
        results.append(BEST)
    if metrics and metrics.get("epochs_done"):
        results.append(f"{METRICS_FILE} with {metrics['epochs_done']} finished epochs")
    return results


def check_writable(run_dir: Path) -> None:
    """Raise ``RunDirError`` unless ``run_dir`` can be created (or is) and written, without writing:
    the nearest existing ancestor must be a writable directory on a real, writable filesystem, and
    every name must fit the filesystem's limits. Call it before anything else looks inside."""
    run_dir = Path(run_dir)
    ancestor = next(path for path in (run_dir, *run_dir.parents) if os.path.exists(path))  # False on any OSError
    if not ancestor.is_dir():
        raise RunDirError(f"--run-dir {run_dir}: {ancestor} is a file, not a directory; choose another path")
    name_max = os.pathconf(ancestor, "PC_NAME_MAX")
    too_long = next((part for part in run_dir.parts if len(os.fsencode(part)) > name_max), None)
    if too_long is not None:
        raise RunDirError(
            f"--run-dir {run_dir}: the name {too_long[:40]}... is longer than the {name_max} bytes "
            f"this filesystem allows; choose a shorter one"
        )
    filesystem = os.statvfs(ancestor)
    if filesystem.f_flag & os.ST_RDONLY:
        raise RunDirError(f"--run-dir {run_dir}: {ancestor} is on a read-only filesystem; choose another place")
    if filesystem.f_blocks == 0:
        raise RunDirError(
            f"--run-dir {run_dir}: {ancestor} is on a pseudo-filesystem (like /proc) that holds no "
            f"files; choose another place"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise RunDirError(f"--run-dir {run_dir}: no permission to write in {ancestor}; choose another place")


def check_run_paths(run_dir: Path) -> None:
    """Raise ``RunDirError`` naming the path where ``run_dir`` (or a folder above it) is a dangling symlink
    or a symlink loop, or where a run file (config, log, metrics, checkpoints, lock) is anything but a
    regular file (a directory, a dangling symlink, a loop, a fifo): checked before anything is written."""
    run_dir = Path(run_dir)
    for path in (run_dir, *run_dir.parents):
        if os.path.islink(path) and not os.path.exists(path):
            raise RunDirError(
                f"--run-dir {run_dir}: {path} is {_broken_link(path)}; fix or remove the link, "
                f"or choose another --run-dir"
            )
    for name in (*RUN_FILES, LOCK):
        path = run_dir / name
        if os.path.lexists(path) and not path.is_file():
            kind = _broken_link(path) if path.is_symlink() else "a directory" if path.is_dir() else "not a regular file"
            raise RunDirError(
                f"{path} is {kind}, where the run keeps its {name}; move it away or choose another --run-dir"
            )


def _broken_link(path: Path) -> str:
    try:
        target = os.stat(path)
    except OSError as error:
        return "a symlink loop" if error.errno == errno.ELOOP else "a symlink to nothing (dangling)"
    return "a symlink to a directory" if stat.S_ISDIR(target.st_mode) else "a symlink to something not a regular file"


PROBE_SECONDS = 0.2  # how long acquire waits out another process's probe of the lock (RunLock.holder)


def _lock_within(fd: int, seconds: float) -> bool:
    """Take the exclusive lock on ``fd``, retrying for ``seconds`` while it is held: a probe holds it for an
    instant, a run for as long as it trains."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)


def _holder_text(fd: int) -> str:
    return os.pread(fd, 200, 0).decode(errors="replace").strip() or "a run that is starting"


class RunLock:
    """An OS lock (``fcntl.flock``) on the run directory's ``.lock`` file, whose text (host and pid)
    names the holder in the message another run gets.

    The kernel releases the lock when its holder exits in any way (a crash, SIGKILL, a full disk), so
    a file left behind never wedges the directory: only a live holder's lock counts."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _lock_within(fd, PROBE_SECONDS):
                holder = _holder_text(fd)
                os.close(fd)
                raise RunDirError(
                    f"another run ({holder}) is writing to {self.path.parent}; wait for it or choose another --run-dir"
                ) from None
            if self._still_the_file(fd):
                break
            os.close(fd)  # its holder released and removed it between our open and our lock: again
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{socket.gethostname()} pid {os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # a full disk: the lock holds all the same, only its note is missing

    @staticmethod
    def holder(run_dir: Path) -> str | None:
        """The live process that holds ``run_dir``'s lock, as the file names it; None when none does. Probes
        with a shared lock for an instant (which ``acquire`` waits out) and creates nothing."""
        try:
            fd = os.open(Path(run_dir) / LOCK, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder_text(fd)
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def _still_the_file(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if self._fd is not None:
            try:
                self.path.unlink(missing_ok=True)  # while still locked: a run that opened it sees it is gone
            except OSError:
                pass  # a read-only directory: the file stays, and a lock file nobody holds never wedges it
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def run_outputs(run_dir: Path) -> list[Path]:
    """A run's own files in ``run_dir`` (not the lock): config, log, metrics, checkpoints, TensorBoard events."""
    run_dir = Path(run_dir)
    return [run_dir / name for name in RUN_FILES if os.path.lexists(run_dir / name)] + sorted(
        run_dir.glob("events.out.tfevents.*")
    )


def clear_run_files(run_dir: Path) -> None:
    """Remove an unfinished run's outputs before it starts over (a ``restart``); the lock stays.
    ``--overwrite`` sets them aside instead (engine/previous_run.py)."""
    for path in run_outputs(run_dir):
        path.unlink()
