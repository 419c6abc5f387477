"""Checkpoints: atomic writes, safe reads (``weights_only=True``), clear errors on bad files."""
from __future__ import annotations

import os
import pickle
import re
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from core.errors import CheckpointError

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile


_TMP_SUFFIX = ".tmp"


def atomic_write(path: Path, write) -> None:
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it over ``path``:
    a crash at any moment leaves either the old file or the new one, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename is None:
            error.filename = str(path)  # a full disk fails a write(), which names no file
        raise
    _fsync_directory(path.parent)


def remove_unfinished_writes(directory: Path) -> None:
    """Delete the temporary files of atomic writes that a killed process left in ``directory``.
    Call it only while no other process can write there (with the run directory's lock held)."""
    for leftover in Path(directory).glob(f".*{_TMP_SUFFIX}"):
        leftover.unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    """Persist the rename itself, so a power loss (not only a killed process) keeps the new file."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_write(path, lambda handle: torch.save(state, handle))


def load_checkpoint(path: str | Path, what: str = "checkpoint") -> dict:
    """Load with ``weights_only=True``: tensors and plain containers only, never arbitrary code."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        with warnings.catch_warnings():
            # A file pickled with a newer protocol warns before it loads or fails; the outcome says enough.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if unsafe:
            raise CheckpointError(
                f"{what} {path} refused for safety: loading it would call {unsafe.group(1)}, which only arbitrary "
                f"unpickling (code execution) allows. Re-save it as a plain state_dict of tensors"
            ) from None
        raise CheckpointError(f"{what} {path} is corrupt, truncated or not a PyTorch checkpoint "
                              f"({_unpickler_reason(error)})") from None
    except Exception as error:  # damaged files surface as RuntimeError, EOFError, KeyError, struct.error, ...
        raise CheckpointError(f"{what} {path} is corrupt, truncated or not a PyTorch checkpoint "
                              f"({_first_line(error)})") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__


def _unpickler_reason(error: pickle.UnpicklingError) -> str:
    """The weights-only unpickler's own reason, without torch's generic advice to retry unsafely."""
    reason = re.search(r"WeightsUnpickler error:\s*(.+)", str(error))
    return reason.group(1).strip()[:200] if reason else _first_line(error)


def state_dict_from(checkpoint, path, what: str) -> dict[str, torch.Tensor]:
    """The model weights inside a run checkpoint (``{"model": ...}``) or a bare state_dict."""
    weights = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{what} {path} holds no model state_dict (expected tensors, or a 'model' entry)")
    return {_strip_prefixes(key): value for key, value in weights.items()}


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def load_model_weights(model: nn.Module, path: str | Path, what: str, *, model_name: str | None = None,
                       num_classes: int | None = None) -> dict:
    """Load weights into ``model`` strictly; a mismatch names the missing, unexpected or misshapen keys.
    ``model_name`` / ``num_classes``, when given, are checked first against a run checkpoint's metadata
    for a one-line diagnosis. Returns the whole checkpoint (for its metadata)."""
    checkpoint = load_checkpoint(path, what)
    if isinstance(checkpoint, dict):
        _check_trained_for(checkpoint, model_name, num_classes, path, what)
    weights = state_dict_from(checkpoint, path, what)
    expected = unwrap(model).state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    misshapen = [f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                 if k in weights and weights[k].shape != v.shape]
    if missing or unexpected or misshapen:
        problems = []
        if missing:
            problems.append(f"missing keys {_few(missing)}")
        if unexpected:
            problems.append(f"unexpected keys {_few(unexpected)}")
        if misshapen:
            problems.append(f"shape mismatches (file vs model) {_few(misshapen)}")
        raise CheckpointError(f"{what} {path} does not fit the model: {'; '.join(problems)}")
    unwrap(model).load_state_dict(weights)
    return checkpoint if isinstance(checkpoint, dict) else {}


def _check_trained_for(checkpoint: dict, model_name: str | None, num_classes: int | None, path, what: str) -> None:
    """Run checkpoints record ``model_name`` and ``num_classes``: name the real cause of a mismatch
    instead of listing every key of a wrong architecture or a classifier of the wrong width."""
    saved_name, saved_classes = checkpoint.get("model_name"), checkpoint.get("num_classes")
    if model_name is not None and saved_name is not None and saved_name != model_name:
        raise CheckpointError(f"{what} {path} holds a {saved_name}, not a {model_name}; "
                              f"use a {model_name} checkpoint or set the model name to {saved_name}")
    if num_classes is not None and saved_classes is not None and saved_classes != num_classes:
        raise CheckpointError(f"{what} {path} was trained for {saved_classes} classes, "
                              f"but the dataset has {num_classes}")


def _few(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DistributedDataParallel and torch.compile wrappers."""
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model
