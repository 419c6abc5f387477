"""Errors caused by the user's input. ``train.py`` prints them as one line and exits with code 2; ``shown``
shortens the values such a line echoes."""

from __future__ import annotations

import reprlib
from typing import Any


class UserError(Exception):
    """Bad input (config, data, checkpoint, run directory): the message says what and how to fix it."""

    exit_code = 2


class ConfigError(UserError):
    pass


class DataError(UserError):
    pass


class CheckpointError(UserError):
    pass


class RunDirError(UserError):
    pass


class DiskFullError(RunDirError):
    """The run directory's disk filled up: the message says where and what was kept."""


class _ShortRepr(reprlib.Repr):
    def repr_int(self, value: int, level: int) -> str:
        if value.bit_length() > 64:  # str() of a huge int is slow, past 4300 digits an error
            return f"{'-' if value < 0 else ''}<an integer of {value.bit_length() * 0.30103:.0f} digits>"
        return repr(value)


_SHORT = _ShortRepr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlevel = 60, 60, 3
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 6


def shown(value: Any) -> str:
    """``repr(value)`` cut to a few dozen characters, for every message that echoes a value the user gave:
    a huge string, list or number is shown by its beginning and end, never printed whole."""
    return _SHORT.repr(value)
