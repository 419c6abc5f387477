"""What trains: the model, the loss terms and the batch plan as one module.

One module, so that one optimizer, one DistributedDataParallel wrapper (which all-reduces the
gradients of the terms' own parameters, e.g. BYOT's auxiliary heads) and one ``torch.compile``
graph (the model's forward and every term's loss together) cover everything that trains. Only
``model`` is the trained network: it alone is exported (the checkpoint's ``"model"``, best.pt,
``scripts/evaluate.py``) and evaluated; the terms' parameters and buffers go to the checkpoint's
``"terms"``, for resuming. The batch plan (data/plans/) holds no parameters; it is inside so that what it
adds once the model has run (``complete``: e.g. CS-KD's partners' logits) is part of the compiled graph.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn

from data.plans import BatchPlan, Plain
from data.plans.plain import PlainPlan
from losses import LossTerm, StepOutput


class TrainingNetwork(nn.Module):
    def __init__(self, model: nn.Module, terms: list[LossTerm], plan: Optional[BatchPlan] = None):
        super().__init__()
        self.model = model
        self.terms = nn.ModuleList(terms)
        self.plan = plan if plan is not None else PlainPlan()

    def forward(
        self,
        parts: tuple[torch.Tensor, ...],
        targets: torch.Tensor,
        epoch: torch.Tensor,
        indices: Optional[torch.Tensor] = None,
        teacher_logits: Optional[torch.Tensor] = None,
        target_probs: Optional[torch.Tensor] = None,
        batch: Any = None,
    ):
        """The model's logits and every term's named, weighted losses for one training batch.

        The batch comes in ``parts`` as the batch plan composed them, each forwarded in a pass of its own (in
        train mode BatchNorm normalises each part with its own batch statistics and updates its running
        statistics once per part), their outputs concatenated in order: one part for most plans, two for DLB's
        (data/plans/last_batch.py). The plan then completes its typed ``batch`` (e.g. CS-KD's partners' logits),
        which the terms read. ``epoch`` is a 0-d tensor, so that a compiled step is not specialised on its value."""
        maps = [self.model.forward_maps(part) for part in parts]  # the model's forward, in its two parts
        feats = [joined(stage) for stage in zip(*(part_feats for part_feats, _ in maps))]
        head_map = joined([part_head for _, part_head in maps])
        # Classified per part too: a head with batch statistics of its own sees each pass's batch alone.
        logits = joined([self.model.classify_map(part_head) for _, part_head in maps])
        batch = self.plan.complete(batch if batch is not None else Plain(), logits, self.model)
        step = StepOutput(
            logits, feats, targets, epoch, teacher_logits, target_probs, batch, self.model, indices, head_map
        )
        losses: dict[str, torch.Tensor] = {}
        for term in self.terms:
            losses.update(term(step))
        return logits, losses


def joined(tensors) -> torch.Tensor:
    """The tensors concatenated along the batch; a single one as it is (``torch.cat`` would copy it)."""
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)
