"""Loss terms composed from the config (``loss.terms``); see ``losses/base.py``."""

from . import (  # noqa: F401  (each module registers its terms; one per line)
    bake,
    byot,
    ce,
    cs_kd,
    ddgsd,
    dks,
    dlb,
    focal,
    frskd,
    kd,
    max_entropy,
    mixskd,
    ps_kd,
    sad,
    tf_kd_reg,
    tffd,
    uskd,
    zipf_ls,
)
from .base import LossTerm, StepOutput, TrainingSetup
from .registry import LOSSES, build_loss_terms, register_loss
from .tffd import inter_fd, intra_fd

__all__ = [
    "LOSSES",
    "LossTerm",
    "StepOutput",
    "TrainingSetup",
    "build_loss_terms",
    "register_loss",
    "inter_fd",
    "intra_fd",
]
