"""Graceful stop on SIGTERM (preemption) and SIGINT (Ctrl-C): the trainer finishes the current step
and exits cleanly; a second Ctrl-C, during the step or the shutdown after it, stops at once with one
line (no KeyboardInterrupt traceback): every file is written atomically and the lock is the kernel's,
so what is on disk stays whole, and the next run cleans up after it."""

from __future__ import annotations

import os
import signal

SECOND_INTERRUPT = (
    b"error: a second Ctrl-C: stopped at once; the files written so far (last.pt) are whole. "
    b"Run the same command again to resume\n"
)


class StopRequest:
    def __init__(self):
        self.signal_name: str | None = None
        self._previous = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    @property
    def exit_code(self) -> int:
        return 128 + getattr(signal, self.signal_name or "SIGTERM")

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            os.write(2, SECOND_INTERRUPT)  # not print(): a signal handler may interrupt a write to stderr
            os._exit(128 + signal.SIGINT)
        self.signal_name = signal.Signals(signum).name

    def __enter__(self):
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        if self.requested:
            return False  # the process is shutting down: a second Ctrl-C still stops it with one line
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        return False
