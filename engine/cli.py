"""What every command-line entry point does with its main()."""

from __future__ import annotations

import functools
import os
import signal
import sys
from typing import Callable, NoReturn

from core.errors import UserError


def status_of(main: Callable[..., int], *args) -> int:
    """``main(*args)``'s exit status, a ``UserError`` being one ``error:`` line on stderr and its
    exit code (2): no entry point catches them itself."""
    try:
        return main(*args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code


class _Passing(BaseException):
    """A ``UserError`` on its way past torchrun's ``@record``, which records only ``Exception``s."""

    def __init__(self, error: UserError):
        self.error = error


def record_bugs(main: Callable[..., int]) -> Callable[..., int]:
    """torchrun's ``@record`` (the failing rank's traceback heads torchrun's failure summary) for bugs only:
    a ``UserError`` is one line, and torchrun would otherwise print its traceback too."""
    from torch.distributed.elastic.multiprocessing.errors import record

    @record
    def recorded(*args):
        try:
            return main(*args)
        except UserError as error:
            raise _Passing(error) from None

    @functools.wraps(main)
    def wrapper(*args):
        try:
            return recorded(*args)
        except _Passing as passing:
            raise passing.error from None

    return wrapper


def exit_with(main: Callable[[], int]) -> NoReturn:
    """``sys.exit(status_of(main))``, but quietly when whoever reads stdout stops early (``... | head``):
    no BrokenPipeError traceback, exit status 141 as a shell reports a process ended by SIGPIPE."""
    try:
        status = status_of(main)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit and would report the same broken pipe there.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 128 + signal.SIGPIPE
    sys.exit(status)
