"""The learning-rate schedule: an optional linear warm-up per step, then a step decay per epoch.

``lr_factor`` is the whole schedule as a pure function of the training step; the trainer steps a
``LambdaLR`` of it after every batch, so a checkpoint's scheduler state (the step count) restores it.
"""

from __future__ import annotations

import torch


def lr_factor(step: int, steps_per_epoch: int, milestones: list[int], gamma: float, warmup_epochs: int) -> float:
    """The multiplier of the base lr for training step ``step`` (0-based, counted over the run).

    Decay: x gamma for each milestone m the finished epochs have reached (a milestone of 150 lowers the
    lr from epoch 151 on, as MultiStepLR stepped per epoch does). Warm-up: over the first
    ``warmup_epochs`` epochs the lr rises linearly, step by step, to its full value at the last
    warm-up step (Self-KD-Lib's per-iteration warm-up)."""
    epochs_done = step // steps_per_epoch
    decay = gamma ** sum(1 for milestone in milestones if milestone <= epochs_done)
    warmup_steps = warmup_epochs * steps_per_epoch
    return decay * (min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0)


def build_scheduler(optimizer, train_config, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        return lr_factor(
            step, steps_per_epoch, train_config.milestones, train_config.gamma, train_config.lr_warmup_epochs
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
