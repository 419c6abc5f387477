"""``--overwrite`` without losing anything: a finished (or any) run's files are set aside inside its run
directory, not deleted, and are dropped only once the new run has written its first checkpoint; a new run
that fails or is stopped before that gets them back.

Every step is a rename or a delete whose state on disk says what to do next, so a run killed at any
moment leaves a directory that the next run (holding the lock) puts right the same way every time:

- ``.previous-run.partial/`` exists: the old files were being moved aside; they all go back.
- ``.previous-run/`` exists and the directory has a ``last.pt``: the new run checkpointed; the old go.
- ``.previous-run/`` exists and there is no ``last.pt``: the new run produced nothing; its files are
  deleted, the folder is renamed ``.previous-run.restoring/`` and
- ``.previous-run.restoring/`` exists: its files go back (``last.pt`` last), then the folder.

Inside the folders each file carries a ``.previous`` suffix, so nothing that looks for a run's
``config.yaml`` or ``metrics.json`` (collect_results.py) takes them for a run of their own.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from core.errors import RunDirError

from .run_dir import LAST, run_outputs

ASIDE, PARTIAL, RESTORING = ".previous-run", ".previous-run.partial", ".previous-run.restoring"
_SUFFIX = ".previous"


def set_aside(run_dir: Path) -> None:
    """Move the previous run's files into ``.previous-run/`` (for --overwrite), atomically as a whole."""
    run_dir = Path(run_dir)
    partial = run_dir / PARTIAL
    partial.mkdir()
    for path in run_outputs(run_dir):
        os.replace(path, partial / (path.name + _SUFFIX))
    os.replace(partial, run_dir / ASIDE)


def pending(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a replacement that has not finished or been undone."""
    return any(os.path.lexists(Path(run_dir) / name) for name in (ASIDE, PARTIAL, RESTORING))


def drop_previous(run_dir: Path) -> None:
    """The new run has written its checkpoint: the set-aside files are no longer needed."""
    aside = Path(run_dir) / ASIDE
    if aside.is_dir():
        shutil.rmtree(aside)


def settle(run_dir: Path) -> str | None:
    """Finish or undo an interrupted replacement as its state on disk says (see the module's docstring);
    call it holding the run directory's lock. Returns "restored", "replaced" or None (nothing pending)."""
    run_dir = Path(run_dir)
    for name in (ASIDE, PARTIAL, RESTORING):
        path = run_dir / name
        if os.path.lexists(path) and (path.is_symlink() or not path.is_dir()):
            raise RunDirError(
                f"{path} is not a directory (it holds the files a run set aside for --overwrite); "
                f"move it away and run the command again"
            )
    if (run_dir / PARTIAL).is_dir():
        _move_back(run_dir / PARTIAL, run_dir)
        return "restored"
    if (run_dir / ASIDE).is_dir():
        if (run_dir / LAST).is_file():
            drop_previous(run_dir)
            return "replaced"
        for path in run_outputs(run_dir):  # the new run's, none of them a checkpoint
            path.unlink()
        os.replace(run_dir / ASIDE, run_dir / RESTORING)
    if (run_dir / RESTORING).is_dir():
        _move_back(run_dir / RESTORING, run_dir)
        return "restored"
    return None


def _move_back(folder: Path, run_dir: Path) -> None:
    kept = sorted(folder.iterdir(), key=lambda path: path.name == LAST + _SUFFIX)  # last.pt last
    for path in kept:
        os.replace(path, run_dir / path.name.removesuffix(_SUFFIX))
    folder.rmdir()
