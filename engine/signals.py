"""Graceful stop on SIGTERM (preemption) and SIGINT (Ctrl-C): the trainer finishes the current step
and exits cleanly; a second Ctrl-C stops at once."""
from __future__ import annotations

import signal


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
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __enter__(self):
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        return False
