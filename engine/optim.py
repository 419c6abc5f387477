"""The optimizer, the lr schedule and the gradient clipping that a config's ``train`` section names, from
torch's own classes (no lr or update arithmetic here).

- ``train.optimizer``: sgd (momentum, Nesterov) or adamw (``train.betas``).
- ``train.weight_decay_norms``: true (the default) decays every parameter, as the CNN protocols do;
  false leaves out 1-d parameters (norm weights, biases) and those a module lists in its
  ``no_weight_decay()`` (a timm ViT's position embedding and class token), as timm's
  ``filter_bias_and_bn`` and DeiT do.
- ``train.schedule``: step (engine/schedule.py: milestones x gamma, per-step linear warm-up) or cosine
  (per step: a linear warm-up over ``lr_warmup_epochs``, then torch's cosine annealing to ``lr_min``
  over the remaining steps).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from core.errors import ConfigError

from .schedule import build_scheduler


def no_decay_names(network: nn.Module) -> set[str]:
    """Names (as ``network.named_parameters()`` gives them) that modules list in their ``no_weight_decay()``."""
    names = set()
    for prefix, module in network.named_modules():
        listed = getattr(module, "no_weight_decay", None)
        if callable(listed):
            names.update(f"{prefix}.{name}" if prefix else name for name in listed())
    return names


def parameter_groups(network: nn.Module, weight_decay: float, decay_norms: bool):
    """The parameters, all with ``weight_decay`` (``decay_norms``), else in two groups: decayed weights, and
    norm weights, biases and ``no_weight_decay()`` parameters without weight decay."""
    if decay_norms:
        return network.parameters()
    listed = no_decay_names(network)
    decayed, undecayed = [], []
    for name, parameter in network.named_parameters():
        (undecayed if parameter.ndim <= 1 or name in listed else decayed).append(parameter)
    return [{"params": decayed, "weight_decay": weight_decay}, {"params": undecayed, "weight_decay": 0.0}]


def build_optimizer(network: nn.Module, train_cfg, lr: float, fused: bool) -> torch.optim.Optimizer:
    params = parameter_groups(network, train_cfg.weight_decay, train_cfg.weight_decay_norms)
    if train_cfg.optimizer == "adamw":
        return torch.optim.AdamW(
            params, lr=lr, betas=tuple(train_cfg.betas), weight_decay=train_cfg.weight_decay, fused=fused
        )
    optimizer = torch.optim.SGD(
        params,
        lr=lr,
        momentum=train_cfg.momentum,
        nesterov=train_cfg.nesterov and train_cfg.momentum > 0,
        weight_decay=train_cfg.weight_decay,
        fused=fused,
    )
    if fused and train_cfg.momentum > 0:
        zero_momentum_buffers(optimizer)
    return optimizer


def zero_momentum_buffers(optimizer: torch.optim.SGD) -> None:
    """Give every parameter a zero momentum buffer before the first step. torch's fused SGD makes its buffers
    with ``torch.empty_like`` at its first step and leaves them unwritten when the gradient scaler skips that
    step (an fp16 overflow, common at the first steps): the next step then reads uninitialised memory, and the
    weights can turn to NaN. From zero buffers the first update is the same (buf = 0 * momentum + g = g, no
    dampening)."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            optimizer.state[parameter]["momentum_buffer"] = torch.zeros_like(parameter)


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, train_cfg, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped after every batch; its ``state_dict`` (the step count) restores it on resume."""
    if train_cfg.schedule == "step":
        return build_scheduler(optimizer, train_cfg, steps_per_epoch)
    if train_cfg.lr_warmup_epochs >= train_cfg.epochs:
        raise ConfigError(
            f"train.schedule=cosine: train.lr_warmup_epochs={train_cfg.lr_warmup_epochs} leaves no "
            f"epoch of the {train_cfg.epochs} to anneal; use fewer warm-up epochs"
        )
    warmup = train_cfg.lr_warmup_epochs * steps_per_epoch
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=train_cfg.epochs * steps_per_epoch - warmup, eta_min=train_cfg.lr_min
    )
    if not warmup:
        return cosine
    # The step schedule's warm-up: lr * (step + 1) / warmup at step 0 .. warmup - 1, full at the last one.
    ramp = torch.optim.lr_scheduler.LinearLR(
        optimizer, start_factor=1 / warmup, end_factor=1.0, total_iters=max(warmup - 1, 1)
    )
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])


def clip_gradients(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, max_norm: float) -> None:
    """Clip the global gradient norm of the optimizer's parameters to ``max_norm`` (after unscaling fp16
    gradients; ``scaler.step`` then knows they are unscaled). ``max_norm`` 0: nothing."""
    if max_norm > 0:
        scaler.unscale_(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, max_norm)
