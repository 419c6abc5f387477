"""Where the scripts may write: a file where a file belongs, a directory where a directory belongs, no
dangling symlink or symlink loop on the way, and never over one of a run's own files.

Each check raises ``RunDirError`` naming the option and the path, and is called before anything is
written. A run's files are ``config.yaml``, ``last.pt``, ``best.pt``, ``metrics.json``, ``log.txt``, the
event files and ``.lock`` (and the temporary files they are written through) in a run directory: a
directory holding ``config.yaml``, ``last.pt``, ``best.pt`` or a ``.lock``. A path counts by where it
leads: a symlink to a run's ``best.pt`` is one.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from core.errors import RunDirError

from .run_dir import BEST, CONFIG_FILE, LAST, LOCK, RUN_FILES

RUN_MARKERS = (CONFIG_FILE, LAST, BEST, LOCK)
EVENTS_PREFIX = "events.out.tfevents."


def is_run_file_name(name: str) -> bool:
    return (
        name in RUN_FILES
        or name == LOCK
        or name.startswith(EVENTS_PREFIX)
        or (name.startswith(".") and name.endswith(".tmp"))
    )  # engine/checkpoint.py's atomic writes


def run_file(path: Path) -> Path | None:
    """The run's file ``path`` leads to (through symlinks), or None where it leads to none."""
    real = Path(os.path.realpath(path))
    if is_run_file_name(real.name) and any(os.path.lexists(real.parent / marker) for marker in RUN_MARKERS):
        return real
    return None


def kind_of(path: Path, what: str) -> str | None:
    """'dir', 'file' or None (nothing there). A dangling symlink, a symlink loop, a file where a
    directory belongs on the way or an unreadable ancestor is a ``RunDirError`` that begins with
    ``what`` (the option and its path)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise RunDirError(
                f"{what} is a symlink to {os.readlink(path)}, which does not exist; remove the link "
                f"or name another path"
            ) from None
        return None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise RunDirError(f"{what} leads into a symlink loop; name another path") from None
        if error.errno == errno.ENOTDIR:
            blocker = next((parent for parent in Path(path).parents if os.path.isfile(parent)), path)
            raise RunDirError(f"{what}: {blocker} is a file, not a directory; name another path") from None
        raise RunDirError(f"{what}: {error.strerror}") from None
    return "dir" if stat.S_ISDIR(mode) else "file"


def _check_makeable(directory: Path, what: str) -> None:
    """``directory`` is a writable directory, or one ``mkdir(parents=True)`` can make."""
    for ancestor in (directory, *directory.parents):
        kind = kind_of(ancestor, f"{what}: {ancestor}")
        if kind is None:
            continue
        if kind != "dir":
            raise RunDirError(f"{what}: {ancestor} is a file, not a directory; name another path")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise RunDirError(f"{what}: no permission to write in {ancestor}; name another path")
        return


def check_output_file(path: Path, flag: str, make_parents: bool = False) -> None:
    """``path`` may be written as a file: not a directory, not a run's file, and its directory exists
    (or, with ``make_parents``, can be made) and is writable."""
    path, what = Path(path), f"{flag} {path}"
    if kind_of(path, what) == "dir":
        raise RunDirError(f"{what} is a directory; name a file")
    parent = Path(os.path.abspath(path)).parent
    if make_parents:
        _check_makeable(parent, what)
    else:
        kind = kind_of(parent, f"{what}: its directory {parent}")
        if kind != "dir":
            raise RunDirError(f"{what}: its directory {parent} {'does not exist' if kind is None else 'is a file'}")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise RunDirError(f"{what}: its directory {parent} is not writable")
    check_not_run_file(path, what)


def check_not_run_file(path: Path, what: str) -> None:
    real = run_file(path)
    if real is not None:
        via = "" if Path(os.path.abspath(path)) == real else f" (a link to {real})"
        raise RunDirError(
            f"{what}{via} is the run's {real.name} in {real.parent}, which only that run writes; name another path"
        )


def check_output_dir(path: Path, flag: str, names: tuple[str, ...] = ()) -> None:
    """``path`` is a writable directory, or one that can be made; the files ``names`` we will write in
    it are neither directories nor (links to) a run's files."""
    path, what = Path(path), f"{flag} {path}"
    kind = kind_of(path, what)
    if kind == "file":
        raise RunDirError(f"{what} is a file, not a directory; name a directory")
    check_not_run_file(path, what)  # e.g. a run's metrics.json not written yet: a directory there would block it
    if kind is None:
        _check_makeable(Path(os.path.abspath(path)), what)
        return
    if not os.access(path, os.W_OK | os.X_OK):
        raise RunDirError(f"{what} is not writable; name another directory")
    for name in names:
        check_output_file(path / name, flag)
