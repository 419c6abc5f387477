"""Which protocol runs were trained under, read from their resolved config.

The Tf-FD paper's table (CIFAR): the Tf-FD paper's protocol (the CRD benchmark's) or the released Tf-FD code's,
each defined by its file in configs/_base_/protocols/ (docs/METHOD.md). A run follows a protocol when every key
the protocol's file sets (through its _base_ files too) has the file's value in the run's config. The options of
a loss term the run does not use are not compared, so a baseline or KD run is recognised by its training and data
keys alone and a Tf-FD run by its lambdas too. The length of the schedule (train.epochs, train.milestones) is
not compared when the epochs differ: that is a quick pass of the protocol (reproduce_cifar100.sh --epochs N),
and is named so. A run that follows none is named "neither", with the keys where it departs from the closest
protocol.

The self-distillation tables: each dataset's protocol (SELFKD_PROTOCOLS: the schedule file our self-KD configs
follow there, Self-KD-Lib's on CIFAR-100, the 100-epoch recipe on ImageNet), and how runs depart from a
schedule file.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from core.typed_config import flatten
from core.yaml_files import load_yaml_tree
from engine.config import load_config
from engine.hparams import hparams_of
from engine.run_dir import RESUME_MAY_CHANGE
from results.numbers import fmt_value

REPO = Path(__file__).resolve().parents[1]
PROTOCOL_DIR = REPO / "configs" / "_base_" / "protocols"
LENGTH_KEYS = ("train.epochs", "train.milestones")
# The CRD benchmark trains these students with lr 0.01, every other model with 0.05 (RepDistiller train_student.py).
LOW_LR_MODELS = ("mobilenetv2", "shufflenetv1", "shufflenetv2")
PAPER, RELEASED = "paper (CRD)", "released code"


@dataclass(frozen=True)
class Protocol:
    name: str  # as the tables show it
    file: str  # its file in PROTOCOL_DIR
    low_lr: bool | None = None  # True: for LOW_LR_MODELS only; False: for the other models only; None: any

    def applies_to(self, model: str) -> bool:
        return self.low_lr is None or (model in LOW_LR_MODELS) == self.low_lr


# In the order they are tried: a baseline follows both released files, and is named by the first.
TFFD_PROTOCOLS = (
    Protocol(PAPER, "tffd_paper.yaml", low_lr=False),
    Protocol(PAPER, "tffd_paper_light.yaml", low_lr=True),
    Protocol(RELEASED, "tffd_released.yaml"),
    Protocol(f"{RELEASED}, README λ", "tffd_released_readme.yaml"),
)


@lru_cache(maxsize=None)
def file_settings(path: Path) -> dict:
    """The flat keys a config file sets (through its _base_ files too), valued as results.aggregate's rows hold a
    run's (engine.trainer.hparams_of); keys that do not change what a run computes (RESUME_MAY_CHANGE) left out."""
    flat = hparams_of(load_config(path))
    return {key: flat[key] for key in flatten(load_yaml_tree(path)) if key not in RESUME_MAY_CHANGE}


def departures(protocol: Protocol, settings: dict) -> tuple[list[str], bool]:
    """The keys where a run's settings (results.aggregate's identity keys) depart from ``protocol``, and whether
    it is a shortened pass of it."""
    wanted = file_settings(PROTOCOL_DIR / protocol.file)
    shortened = settings.get("train.epochs") != wanted["train.epochs"]
    keys = [
        key
        for key, value in wanted.items()
        if key in settings and settings[key] != value and not (shortened and key in LENGTH_KEYS)
    ]
    return keys, shortened


def tffd_protocol(model: str, settings: dict) -> str:
    """The name of the protocol a run of ``model`` with these settings follows, or "neither (...)"."""
    closest = None
    for protocol in (protocol for protocol in TFFD_PROTOCOLS if protocol.applies_to(model)):
        keys, shortened = departures(protocol, settings)
        if not keys:
            return protocol.name + (", shortened" if shortened else "")
        if closest is None or len(keys) < len(closest[1]):
            closest = protocol.name, keys
    return f"neither (as {closest[0]} but for {', '.join(closest[1])})"


# ---------------------------------------------------------------- the self-distillation tables
SCHEDULES = REPO / "configs" / "_base_" / "schedules"
# dataset -> (the schedule our self-KD configs follow there, its name): what "like-for-like" means
SELFKD_PROTOCOLS = {
    "cifar100": (SCHEDULES / "selfkd_200e.yaml", "Self-KD-Lib's CIFAR-100 protocol"),
    "imagenet": (SCHEDULES / "imagenet_100e.yaml", "the standard ImageNet 100-epoch recipe"),
}


@lru_cache(maxsize=1)
def protocol_of(dataset: str) -> tuple[Path, str]:
    """The protocol a self-KD table on ``dataset`` is held to: its own, else Self-KD-Lib's CIFAR-100 one."""
    return SELFKD_PROTOCOLS.get(dataset, SELFKD_PROTOCOLS["cifar100"])


def schedule_deviations(schedule: Path, settings: dict) -> list[str]:
    """How runs of these settings depart from a schedule file (empty: they follow it); a long list (a
    per-epoch decay's milestones, a string in the flat settings) by its ends."""

    def short(value) -> str:
        items = str(value).split(", ")
        return ", ".join([*items[:2], "...", items[-1]]) if len(items) > 6 else fmt_value(value)

    return [
        f"{key}={short(settings.get(key))}, not {short(value)}"
        for key, value in file_settings(schedule).items()
        if key in settings and settings[key] != value
    ]


def protocol_deviations(dataset: str, settings: dict) -> list[str]:
    """How runs of these settings depart from the dataset's protocol (empty: they follow it)."""
    out = [] if dataset in SELFKD_PROTOCOLS else [f"dataset {dataset}, not cifar100"]
    return out + schedule_deviations(protocol_of(dataset)[0], settings)
