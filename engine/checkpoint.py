"""Checkpoints: atomic writes, safe reads (``weights_only=True``), clear errors on bad files."""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import re
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Sequence

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
    """Load with ``weights_only=True``: tensors and plain containers only, never arbitrary code; a ``.safetensors``
    file through safetensors."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    if path.suffix == ".safetensors":
        return _load_safetensors(path, what)
    try:
        with warnings.catch_warnings():
            # A file pickled with a newer protocol warns before it loads or fails; the outcome says enough.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        unsafe = _unsafe_global(str(error), path)
        if unsafe:
            raise CheckpointError(
                f"{what} {path} needs arbitrary unpickling (it would call {unsafe}, which can run any code) and is "
                f"refused for safety. Re-save it as a plain state_dict of tensors"
            ) from None
        raise CheckpointError(
            f"{what} {path} is corrupt, truncated or not a PyTorch checkpoint ({_reason(error)})"
        ) from None
    except Exception as error:  # damaged files surface as RuntimeError, EOFError, KeyError, struct.error, ...
        raise CheckpointError(
            f"{what} {path} is corrupt, truncated or not a PyTorch checkpoint ({_reason(error)})"
        ) from None


def _load_safetensors(path: Path, what: str) -> dict:
    """A .safetensors file (timm's weight files): tensors only, by the format's design."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise CheckpointError(
            f"{what} {path} is corrupt, truncated or not a safetensors file ({type(error).__name__}: {reason})"
        ) from None


# torch's own advice in its messages, which would run the code this module refuses to: never repeated.
_TORCH_ADVICE = ("weights_only", "trusted source", "Check the documentation", "file an issue")
_SAFE_GLOBALS = ("torch.", "collections.OrderedDict")  # what a weights-only checkpoint itself refers to


def _reason(error: BaseException) -> str:
    """The first line of ``error`` that says what is wrong, without torch's advice to load unsafely."""
    text = str(error)
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    lines = (
        [found.group(1)]
        if found
        else [line for line in text.strip().splitlines() if line.strip() and not any(a in line for a in _TORCH_ADVICE)]
    )
    return f"{type(error).__name__}: {lines[0].strip()[:200]}" if lines else type(error).__name__


def _unsafe_global(message: str, path: Path) -> str | None:
    """The callable (``module.name``) a checkpoint would import when unpickled, if it names one that a
    weights-only load refuses: from torch's message, else from the pickle's opcodes (read, never run)."""
    named = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+?)(?: |$|\n)", message)
    if named:
        return named.group(1)
    try:
        stream = _pickle_stream(path)
        strings: list[str] = []
        for opcode, arg, _ in pickletools.genops(stream):
            if opcode.name in ("GLOBAL", "INST"):
                name = arg.replace(" ", ".")
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                name = ".".join(strings[-2:])
            else:
                if isinstance(arg, str):
                    strings.append(arg)
                continue
            if not name.startswith(_SAFE_GLOBALS):
                return name
    except Exception:  # noqa: BLE001 - a probe of hostile bytes; what it cannot parse is reported as corrupt
        return None
    return None


def _pickle_stream(path: Path) -> io.BytesIO:
    """The pickle inside a torch zip checkpoint (``*/data.pkl``), or the whole file."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            member = next(name for name in archive.namelist() if name.endswith("data.pkl"))
            return io.BytesIO(archive.read(member))
    return io.BytesIO(path.read_bytes())


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
                key, changed = key[len(prefix) :], True
    return key


def load_model_weights(
    model: nn.Module,
    path: str | Path,
    what: str,
    *,
    model_name: str | None = None,
    num_classes: int | None = None,
    skip: Sequence[str] = (),
) -> dict:
    """Load weights into ``model`` strictly; a mismatch names the missing, unexpected or misshapen keys.
    ``model_name`` / ``num_classes``, when given, are checked first against a run checkpoint's metadata
    for a one-line diagnosis. Keys under the prefixes ``skip`` (``model.weights_skip``: a classifier of
    another number of classes) are left out on both sides and keep the model's initialisation. Returns the
    whole checkpoint (for its metadata)."""
    checkpoint = load_checkpoint(path, what)
    if isinstance(checkpoint, dict) and not skip:
        check_trained_for(checkpoint, model_name, num_classes, path, what)
    weights = state_dict_from(checkpoint, path, what)
    if skip:
        weights = {key: value for key, value in weights.items() if not _under(key, skip)}
    check_fits(model, weights, path, what, skip)
    unwrap(model).load_state_dict(weights, strict=not skip)  # check_fits has matched every key but the skipped
    return checkpoint if isinstance(checkpoint, dict) else {}


def _under(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == prefix or key.startswith(prefix + ".") for prefix in prefixes)


def check_fits(model: nn.Module, weights: dict[str, torch.Tensor], path, what: str, skip: Sequence[str] = ()) -> None:
    """``CheckpointError`` naming the missing, unexpected or misshapen keys unless ``weights`` load into
    ``model`` strictly (the keys under the prefixes ``skip`` aside), and naming the tensor unless every
    floating-point one is finite."""
    expected = unwrap(model).state_dict()
    unmatched = [prefix for prefix in skip if not any(_under(key, [prefix]) for key in expected)]
    if unmatched:
        raise CheckpointError(
            f"model.weights_skip: {unmatched[0]!r} names no key of the model (its keys begin {_few(list(expected))})"
        )
    expected = {key: value for key, value in expected.items() if not _under(key, skip)}
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    misshapen = [
        f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in weights and weights[k].shape != v.shape
    ]
    if missing or unexpected or misshapen:
        problems = []
        if missing:
            problems.append(f"missing keys {_few(missing)}")
        if unexpected:
            problems.append(f"unexpected keys {_few(unexpected)}")
        if misshapen:
            problems.append(f"shape mismatches (file vs model) {_few(misshapen)}")
        raise CheckpointError(f"{what} {path} does not fit the model: {'; '.join(problems)}")
    not_finite = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if not_finite:
        raise CheckpointError(
            f"{what} {path} holds NaN or Inf values in {_few(not_finite)}: the weights of a run "
            f"that diverged; use a checkpoint from before it did"
        )


def check_trained_for(checkpoint: dict, model_name: str | None, num_classes: int | None, path, what: str) -> None:
    """Run checkpoints record ``model_name`` and ``num_classes``: name the real cause of a mismatch
    instead of listing every key of a wrong architecture or a classifier of the wrong width."""
    saved_name, saved_classes = checkpoint.get("model_name"), checkpoint.get("num_classes")
    if model_name is not None and saved_name is not None and saved_name != model_name:
        raise CheckpointError(
            f"{what} {path} holds a {saved_name}, not a {model_name}; "
            f"use a {model_name} checkpoint or set the model name to {saved_name}"
        )
    if num_classes is not None and saved_classes is not None and saved_classes != num_classes:
        raise CheckpointError(
            f"{what} {path} was trained for {saved_classes} classes, but the dataset has {num_classes}"
        )


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
