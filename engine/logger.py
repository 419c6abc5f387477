"""Run output on the main rank: console lines, ``log.txt``, TensorBoard scalars and hparams.
Other ranks get a logger that does nothing, so callers never test the rank themselves."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from .run_dir import LOG_FILE


class RunLogger:
    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = Path(run_dir)
        self.log_file = open(self.run_dir / LOG_FILE, "a", buffering=1)
        self.writer = SummaryWriter(log_dir=str(self.run_dir))

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

    def hparams(self, params: dict, metrics: dict) -> None:
        # run_name="." keeps the hparams summary in the run's own event file directory
        self.writer.add_hparams(params, metrics, run_name=".")

    def flush(self) -> None:
        self.writer.flush()
        self.log_file.flush()

    def close(self) -> None:
        self.writer.close()
        self.log_file.close()


class NullLogger:
    """What non-main ranks log: nothing."""

    def info(self, message: str, stream=None) -> None:
        pass

    def error(self, message: str) -> None:
        pass

    def scalars(self, values, step, prefix="") -> None:
        pass

    def hparams(self, params, metrics) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
