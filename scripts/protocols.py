"""Which protocol a CIFAR run was trained under, read from its resolved config: the Tf-FD paper's (the CRD
benchmark's) or the released Tf-FD code's, each defined by its file in configs/_base_/protocols/ (docs/METHOD.md).

A run follows a protocol when every key the protocol's file sets (through its _base_ files too) has the file's
value in the run's config. The options of a loss term the run does not use are not compared, so a baseline or KD
run is recognised by its training and data keys alone and a Tf-FD run by its lambdas too. The length of the
schedule (train.epochs, train.milestones) is not compared when the epochs differ: that is a quick pass of the
protocol (reproduce_cifar100.sh --epochs N), and is named so. A run that follows none is named "neither", with
the keys where it departs from the closest protocol.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from core.typed_config import flatten
from core.yaml_files import load_yaml_tree
from engine.config import load_config
from engine.run_dir import RESUME_MAY_CHANGE
from engine.trainer import hparams_of

PROTOCOL_DIR = Path(__file__).resolve().parents[1] / "configs" / "_base_" / "protocols"
LENGTH_KEYS = ("train.epochs", "train.milestones")
# The CRD benchmark trains these students with lr 0.01, every other model with 0.05 (RepDistiller train_student.py).
LOW_LR_MODELS = ("mobilenetv2", "shufflenetv1", "shufflenetv2")
PAPER, RELEASED = "paper (CRD)", "released code"


@dataclass(frozen=True)
class Protocol:
    name: str                     # as the tables show it
    file: str                     # its file in PROTOCOL_DIR
    low_lr: bool | None = None    # True: for LOW_LR_MODELS only; False: for the other models only; None: any

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
    """The flat keys a config file sets (through its _base_ files too), valued as collect_results' rows hold a
    run's (engine.trainer.hparams_of); keys that do not change what a run computes (RESUME_MAY_CHANGE) left out."""
    flat = hparams_of(load_config(path))
    return {key: flat[key] for key in flatten(load_yaml_tree(path)) if key not in RESUME_MAY_CHANGE}


def departures(protocol: Protocol, settings: dict) -> tuple[list[str], bool]:
    """The keys where a run's settings (collect_results' identity keys) depart from ``protocol``, and whether
    it is a shortened pass of it."""
    wanted = file_settings(PROTOCOL_DIR / protocol.file)
    shortened = settings.get("train.epochs") != wanted["train.epochs"]
    keys = [key for key, value in wanted.items()
            if key in settings and settings[key] != value and not (shortened and key in LENGTH_KEYS)]
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
