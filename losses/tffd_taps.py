"""Stage taps: the Tf-FD term's work on a stage feature, done as the stage finishes.

The term reads the stage features after the whole forward pass, by which time the shallow ones have
left the CPU's caches, and autograd then adds the Tf-FD gradient to the network's in a pass of its
own. A tap, a forward hook on a stage module, runs ``feature_work`` on the stage's output at once
and lets the network go on with the function's view of it: the work reads a feature that is still
in cache, and the backward adds both gradients in one pass (docs/PERFORMANCE.md has the figures).

Each tap follows a ``FeaturePlan`` (which losses, pooled to which sizes) that the term makes once,
from the stage shapes the builder measured. The term uses a tap's work only where it ran on the very
tensor, with the very plan, that the term needs, and does the work itself otherwise (say, for images
of another size). The loss values are the same either way, bit for bit; the gradients differ at most
in the order of their additions. Taps do nothing where autograd is off (evaluation).
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import torch
import torch.nn as nn

from .tffd_fused import FeaturePlan, feature_work


class StageTaps:
    """Forward hooks on ``modules``, the modules whose outputs are the stage features, in order; the
    tap of stage index i follows ``plans[i]``, and stages without a plan are left alone. No modules:
    the term does all its work itself."""

    def __init__(self, modules: Sequence[nn.Module] = (), plans: dict[int, FeaturePlan] | None = None):
        self.plans = dict(plans or {})
        self.tapped: dict[int, tuple[torch.Tensor, ...]] = {}  # this step's work, per stage index
        self.uses = 0  # how many times the term has used a tap's work, all stages and steps together
        self.handles = [module.register_forward_hook(partial(self._tap, index))
                        for index, module in enumerate(modules) if index in self.plans]

    def _tap(self, index: int, module: nn.Module, inputs, output):
        plan = self.plans[index]
        if not (torch.is_grad_enabled() and isinstance(output, torch.Tensor) and plan.fits(output)):
            self.tapped.pop(index, None)
            return None
        self.tapped[index] = outputs = feature_work(output, plan)
        return outputs[0]  # the network goes on with the view, so its gradient comes back through the work

    def outputs(self, index: int, feature: torch.Tensor, plan: FeaturePlan) -> tuple[torch.Tensor, ...]:
        """``feature_work(feature, plan)``: what the tap of stage ``index`` computed, where it ran on
        ``feature`` itself with ``plan``, else computed now."""
        outputs = self.tapped.pop(index, None)
        if outputs is not None and outputs[0] is feature and self.plans[index] == plan:
            self.uses += 1
            return outputs
        return feature_work(feature, plan)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles, self.tapped = [], {}
