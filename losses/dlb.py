"""DLB, self-distillation from the last mini-batch (Shen et al., CVPR 2022).

Every sample comes in two views, and step t trains on view 0 of its new batch B_t together with view 1 of
the previous batch B_{t-1} (the ``last_batch`` batch plan, data/plans/last_batch.py, which also forwards
them as the authors' code does, in two passes). The predictions that step t-1 made on view 0 of B_{t-1}
(with the weights before its update) teach the network's predictions on their view 1:

    L_dlb = T^2 * KL(softmax(z_{t-1}(B_{t-1}, view 0) / T) || softmax(z_t(B_{t-1}, view 1) / T)),  batch mean

and the ``ce`` term is the cross-entropy over all 2B images of the step (the mean over the concatenation
of both passes' outputs, as in Meta-knowledge-Lab/DLB ``dlb.py``: a smaller last batch of an epoch weighs
less, as here). The run's very first step has no previous batch: it trains on B_t's view 0 alone, with
CE only. Their code gives T and alpha no defaults; the paper's T = 3, alpha = 1 are used here.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.typed_config import LOSS_WEIGHT, TEMPERATURE, Options, option
from data.plans import LastBatch

from .base import LossTerm, StepOutput
from .kd import kd_loss
from .registry import register_loss


@dataclass
class DLBConfig(Options):
    weight: float = option(1.0, "alpha, the weight of the last-mini-batch distillation", **LOSS_WEIGHT)
    temperature: float = option(3.0, "softmax temperature T", **TEMPERATURE)


@register_loss("dlb", DLBConfig)
class LastMiniBatchKD(LossTerm):
    batch_plan = "last_batch"

    def __init__(self, config: DLBConfig):
        super().__init__()
        self.config = config

    def forward(self, step: StepOutput):
        batch: LastBatch = step.batch
        teacher = batch.teacher_logits
        if teacher is None:  # the run's first step: nothing to distil from yet (a zero in the graph, so that
            return {"dlb": step.logits[:0].sum()}  # a step of dlb alone still has a gradient, of zeros)
        last = step.logits[step.logits.shape[0] - teacher.shape[0] :]  # B_{t-1}'s view 1: the batch's last rows
        return {"dlb": self.config.weight * kd_loss(last, teacher, self.config.temperature)}
