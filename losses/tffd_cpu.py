"""The Tf-FD term's C++ CPU kernels (``losses/csrc/tffd_cpu.cpp``), built on first use.

On CPUs, each PyTorch op of the term is a separate pass over a feature map; the kernels do the same
work in one pass per step, with the same loss values (see ``losses/tffd_fused.py``). They are
compiled once per machine and PyTorch version by ``torch.utils.cpp_extension`` (a C++ compiler and
ninja; 10-15 s), into ``$TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``).
Where they cannot be built, the term says why once and computes through PyTorch: the same numbers,
slower. ``TFFD_CPU_KERNELS=0`` turns them off.
"""
from __future__ import annotations

import logging
import os
import sys
import sysconfig
import time
import warnings
from pathlib import Path
from typing import Optional

import torch

SOURCE = Path(__file__).with_name("csrc") / "tffd_cpu.cpp"
ENV_SWITCH = "TFFD_CPU_KERNELS"
# -fopenmp: ATen's parallel_for splits the work over the same threads as PyTorch's own ops.
# -ffp-contract=off: no fused multiply-add, so every value is rounded exactly as PyTorch rounds it.
CFLAGS = ["-O3", "-fopenmp", "-ffp-contract=off"]

_kernels = None
_tried = False


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1") != "0"


def cpu_kernels() -> Optional[object]:
    """``torch.ops.tffd_cpu`` (built the first time), or None where it is off or cannot be built."""
    global _kernels, _tried
    if not _tried:
        _tried = True
        _kernels = _build() if enabled() else None
    return _kernels


def build_directory() -> Path:
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions")
    version = torch.__version__.replace("+", "_")
    return root / f"tffd_cpu-torch{version}-py{sys.version_info.major}{sys.version_info.minor}"


def _build() -> Optional[object]:
    began = time.monotonic()
    try:
        _compile_and_load(build_directory())
    except Exception as error:  # no compiler, no ninja, a read-only cache: fall back and say why, once
        text = str(error).strip()
        reason = text.splitlines()[-1] if text else type(error).__name__
        print(f"Tf-FD: the CPU kernels could not be built ({type(error).__name__}: {reason[:300]}); computing "
              f"through PyTorch instead: the same values, slower. Set {ENV_SWITCH}=0 to skip the attempt.",
              file=sys.stderr)
        return None
    if time.monotonic() - began > 2 and os.environ.get("RANK", "0") == "0":
        print(f"Tf-FD: built the CPU kernels in {time.monotonic() - began:.0f} s (kept in {build_directory()})",
              file=sys.stderr)
    return torch.ops.tffd_cpu


def _compile_and_load(directory: Path) -> None:
    # Importing cpp_extension on a machine without CUDA logs "No CUDA runtime is found": not our concern.
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        logger.setLevel(level)

    directory.mkdir(parents=True, exist_ok=True)
    # ninja installed with this interpreter (requirements.txt) is found even in a venv that is not activated.
    scripts = sysconfig.get_path("scripts")
    if scripts and scripts not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join(filter(None, [os.environ.get("PATH"), scripts]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no CUDA runtime found" and the like: not ours to report
        # Processes that load at once (DDP ranks) take turns through an OS-level file lock, which a
        # process killed mid-build does not leave behind.
        cpp_extension.load(name="tffd_cpu", sources=[str(SOURCE)], extra_cflags=CFLAGS,
                           build_directory=str(directory), is_python_module=False, verbose=False)
