"""What trains: the model and the loss terms as one module.

One module, so that one optimizer, one DistributedDataParallel wrapper (which all-reduces the
gradients of the terms' own parameters, e.g. BYOT's auxiliary heads) and one ``torch.compile``
graph (the model's forward and every term's loss together) cover everything that trains. Only
``model`` is the trained network: it alone is exported (the checkpoint's ``"model"``, best.pt,
``scripts/evaluate.py``) and evaluated; the terms' parameters and buffers go to the checkpoint's
``"terms"``, for resuming.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn

from losses import LossTerm, StepOutput


class TrainingNetwork(nn.Module):
    def __init__(self, model: nn.Module, terms: list[LossTerm]):
        super().__init__()
        self.model = model
        self.terms = nn.ModuleList(terms)

    def forward(self, images: torch.Tensor, targets: torch.Tensor, epoch: int,
                indices: Optional[torch.Tensor] = None, teacher_logits: Optional[torch.Tensor] = None,
                target_probs: Optional[torch.Tensor] = None, extras: Optional[dict[str, Any]] = None):
        """The model's logits and every term's named, weighted losses for one training batch."""
        feats, head_map = self.model.forward_maps(images)  # the model's forward, in its two parts
        logits = self.model.classify_map(head_map)
        step = StepOutput(logits, feats, targets, epoch, teacher_logits, target_probs, extras or {}, self.model,
                          indices, head_map)
        losses: dict[str, torch.Tensor] = {}
        for term in self.terms:
            losses.update(term(step))
        return logits, losses
