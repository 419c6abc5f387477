"""An entry point's ``main(argv)`` run in the test's own process, as its command would run: its exit
status, stdout and stderr captured, and the process-wide state it changes given back afterwards.

    run_main(main, argv)  ->  Finished(args, returncode, stdout, stderr)   (as subprocess.run's result)
    process_state_kept()  ->  a context: what a run may change in this process is restored on leaving it

Only what is not the behaviour under test runs in a real process (tests that signal a run, torchrun, a
second process racing for a lock, environment variables read when torch is imported)."""

from __future__ import annotations

import io
import os
import random
import signal
import sys
import threading
import traceback
import warnings
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from engine.cli import status_of

REPO = Path(__file__).resolve().parents[1]
# Set by torchrun: without them a run is one process (engine/distributed.py), as in the tests' commands.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
PYTEST_VARIABLES = ("PYTEST_CURRENT_TEST",)  # pytest's own, changed by pytest between a test's phases


@dataclass
class Finished:
    """What a command left: the fields of ``subprocess.CompletedProcess`` that the tests read."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def run_main(main: Callable[[list[str]], int], argv: list[str], check: bool = False) -> Finished:
    """``main(argv)`` from the repository root, outside torchrun; stdout and stderr captured. The exit
    status is the command's: a ``UserError``'s one line and code, argparse's usage error (2), and a bug's
    traceback on stderr with status 1, as the interpreter prints it."""
    out, err = io.StringIO(), io.StringIO()
    with process_state_kept(), redirect_stdout(out), redirect_stderr(err), warnings.catch_warnings():
        # torchrun's error handler (engine/cli.py's record_bugs) enables faulthandler on stderr: this one has
        # no file descriptor, and a fault would end the test session anyway.
        warnings.filterwarnings("ignore", message="Unable to enable fault handler")
        os.chdir(REPO)
        for name in TORCHRUN_VARIABLES:
            os.environ.pop(name, None)
        code = exit_status(main, argv)
    finished = Finished(list(argv), code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(
            f"{getattr(main, '__module__', main)} exited {code}:\n{finished.stdout[-3000:]}\n{finished.stderr[-3000:]}"
        )
    return finished


def exit_status(main: Callable[[list[str]], int], argv: list[str]) -> int:
    """The status ``sys.exit(status_of(main, argv))`` would end the process with (engine/cli.py)."""
    try:
        return status_of(main, argv)
    except SystemExit as stop:  # argparse: --help (0), a usage error (2)
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        return 1


@contextmanager
def process_state_kept():
    """Gives back what a run changes in this process: the working directory, the environment, the random
    generators' states (a run seeds them), PyTorch's determinism, cuDNN and thread settings, the SIGINT
    and SIGTERM handlers and the threads' exception hook."""
    cwd, environ = os.getcwd(), dict(os.environ)
    generators = random.getstate(), np.random.get_state(), torch.get_rng_state()
    torch_flags = current_torch_flags()
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    thread_hook = threading.excepthook
    try:
        yield
    finally:
        os.chdir(cwd)
        restore_environment(environ)
        random.setstate(generators[0])
        np.random.set_state(generators[1])
        torch.set_rng_state(generators[2])
        if torch_flags != current_torch_flags():
            deterministic, warn_only, benchmark, threads = torch_flags
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
            torch.backends.cudnn.benchmark = benchmark
            torch.set_num_threads(threads)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        threading.excepthook = thread_hook


def current_torch_flags() -> tuple:
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.get_num_threads(),
    )


def restore_environment(saved: dict[str, str]) -> None:
    for name in set(os.environ) - set(saved) - set(PYTEST_VARIABLES):
        del os.environ[name]
    for name, value in saved.items():
        if name not in PYTEST_VARIABLES and os.environ.get(name) != value:
            os.environ[name] = value
