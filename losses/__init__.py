"""Loss terms composed from the config (``loss.terms``); see ``losses/base.py``."""
from . import byot, ce, cs_kd, dks, dlb, kd, mixskd, ps_kd, tf_kd_reg, tffd  # noqa: F401  (registers terms)
from .base import LossTerm, StepOutput, TrainingSetup
from .registry import LOSSES, build_loss_terms, register_loss
from .tffd import inter_fd, intra_fd

__all__ = ["LOSSES", "LossTerm", "StepOutput", "TrainingSetup", "build_loss_terms", "register_loss", "inter_fd", "intra_fd"]
