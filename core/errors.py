"""Errors caused by the user's input. ``train.py`` prints them as one line and exits with code 2."""


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
