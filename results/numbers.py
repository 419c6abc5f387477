"""The numbers a table shows: the metrics read from metrics.json (top-1, ECE, NLL, AURC), a cell's mean ± std
over seeds (Stat), and how a setting's value, a set of settings and a difference are written."""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import ConfigError

MAX, MIN = "max", "min"  # which entry of a column is the best one


@dataclass(frozen=True)
class Metric:
    """A number metrics.json holds as best_<key> and last_<key> (of the best-top-1 and the last epoch)."""

    key: str
    name: str
    unit: str
    digits: int
    better: str
    definition: str = ""

    @property
    def header(self) -> str:  # top-1's unit is in the caption
        return self.name if self.key == "acc1" else f"{self.name} ({self.unit})"

    @property
    def title(self) -> str:
        return f"{self.name} ({self.unit})"


ACC1 = Metric("acc1", "top-1", "%", 2, MAX)
METRICS = {
    metric.key: metric
    for metric in (
        ACC1,
        Metric("ece", "ECE", "%", 2, MIN, "expected calibration error, 15 equal-width confidence bins, in %"),
        Metric("nll", "NLL", "nats", 3, MIN, "mean negative log-likelihood of the true class, in nats"),
        Metric(
            "aurc", "AURC", "×10³", 2, MIN, "area under the risk-coverage curve of the max-softmax confidence, ×10³"
        ),
    )
}


def parse_metrics(text: str) -> tuple[Metric, ...]:
    """--metrics acc1,ece,nll: the numbers shown besides top-1 (always shown), in the order given."""
    names = [name.strip() for name in text.split(",")]
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ConfigError(f"--metrics takes a list of {', '.join(METRICS)}, got {text!r}")
    return tuple(METRICS[name] for name in dict.fromkeys(names) if name != ACC1.key)


@dataclass(frozen=True)
class Stat:
    """A number of a table: a mean over seeds and its sample std (None for one seed), or one value; None is –."""

    mean: float | None
    std: float | None = None
    digits: int = 2
    signed: bool = False
    note: str = ""  # text after the number, e.g. " (1/2 finished)"

    def number(self, pm: str = " ± ") -> str:
        value = f"{self.mean:+.{self.digits}f}" if self.signed else f"{self.mean:.{self.digits}f}"
        return value + (f"{pm}{self.std:.{self.digits}f}" if self.std is not None else "")

    def text(self) -> str:
        return "–" if self.mean is None else self.number() + self.note


NONE = "none"  # a published-number cell without a number: the source gives none, not a zero


def fmt_value(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def describe(settings: dict) -> str:
    return ", ".join(f"{key}={fmt_value(value)}" for key, value in settings.items())


def difference(mean: float | None, paper: float | None) -> float | None:
    return None if mean is None or paper is None else mean - paper
