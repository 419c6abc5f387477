"""Run output on the main rank: console lines, ``log.txt``, TensorBoard scalars and hparams.
Other ranks get a logger that does nothing, so callers never test the rank themselves."""

from __future__ import annotations

import functools
import sys
import threading
import time
from pathlib import Path

from .run_dir import LOG_FILE


def wait_past_event_files(run_dir: Path) -> None:
    """Wait until the clock's second is past the creation second in every event file's name in ``run_dir``.
    TensorBoard reads a run's event files in name order (events.out.tfevents.<second>.<host>.<pid>...): a
    resumed run's file made in the same second as the killed run's would sort by pid, possibly first, and
    its points would be read before the killed run's, which the purge then drops (at most a second's wait)."""
    seconds = [
        int(part) for path in run_dir.glob("events.out.tfevents.*") if (part := path.name.split(".")[3]).isdigit()
    ]
    while seconds and time.time() < max(seconds) + 1:
        time.sleep(0.05)


class RunLogger:
    """``purge_step``: a resumed run's first step; TensorBoard then drops the points a killed run wrote
    from that step on (those after its last checkpoint), which the resumed run writes again."""

    def __init__(self, run_dir: Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = Path(run_dir)
        self._thread_hook = threading.excepthook
        threading.excepthook = functools.partial(_quiet_event_writer_errors, otherwise=self._thread_hook)
        try:
            self.log_file = open(self.run_dir / LOG_FILE, "a", buffering=1)
            wait_past_event_files(self.run_dir)
            self.writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=purge_step)
        except BaseException:
            threading.excepthook = self._thread_hook
            raise
        self._session_end = None

    def info(self, message: str, stream=None) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        for line in message.splitlines() or [""]:
            self.log_file.write(f"[{stamp}] {line}\n")
        print(message, file=stream or sys.stdout, flush=True)

    def error(self, message: str) -> None:
        """One line on stderr (where train.py reports every failure) and in log.txt."""
        self.info(f"error: {message}", stream=sys.stderr)

    def scalars(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        for name, value in values.items():
            self.writer.add_scalar(prefix + name, value, step)

    def start_hparams(self, params: dict, metric_tags: list[str]) -> None:
        """The run's row of TensorBoard's HParams tab, written as it starts, so that unfinished and
        killed runs have one too; the metrics are the scalars logged under ``metric_tags``."""
        from torch.utils.tensorboard.summary import hparams

        experiment, start, self._session_end = hparams(params, {tag: 0.0 for tag in metric_tags})
        for summary in (experiment, start):
            self.writer._get_file_writer().add_summary(summary)

    def end_hparams(self) -> None:
        """Mark the run's HParams session finished."""
        if self._session_end is not None:
            self.writer._get_file_writer().add_summary(self._session_end)

    def flush(self) -> None:
        self.writer.flush()
        self.log_file.flush()

    def close(self) -> None:
        try:
            self.writer.close()
            self.log_file.close()
        finally:
            threading.excepthook = self._thread_hook


def _quiet_event_writer_errors(args, otherwise) -> None:
    """TensorBoard writes its events in a thread of its own; a write that fails there (a full disk, a
    directory gone) is raised again in the main thread at the writer's next call, where the session
    reports it in one line: the thread's own traceback would only repeat it."""
    if issubclass(args.exc_type, OSError) and type(args.thread).__name__ == "_AsyncWriterThread":
        return
    otherwise(args)  # the hook that was installed before (the interpreter's, or a test runner's)


class NullLogger:
    """What non-main ranks log: nothing."""

    def info(self, message: str, stream=None) -> None:
        pass

    def error(self, message: str) -> None:
        pass

    def scalars(self, values, step, prefix="") -> None:
        pass

    def start_hparams(self, params, metric_tags) -> None:
        pass

    def end_hparams(self) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
