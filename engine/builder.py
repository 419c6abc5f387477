"""Build every part of an experiment from its config, before anything is written to disk, so that
bad input fails early and leaves no trace."""

from __future__ import annotations

import os
import random
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.flop_counter import FlopCounterMode

from core.errors import ConfigError
from data import Loaders, build_dataset, build_loaders
from data.batch_transforms import build_batch_transforms
from data.plans import BatchPlan, build_plan, choose_plan
from losses import LossTerm, TrainingSetup, build_loss_terms
from models import build_configured_model
from models.timm_backbone import check_model_serves_terms

from .checkpoint import load_model_weights
from .distributed import DistContext
from .network import TrainingNetwork
from .optim import build_lr_scheduler, build_optimizer
from .teacher import FrozenTeacher, build_teacher


@dataclass
class ModelProfile:
    parameters: int
    forward_flops: int  # per image; FLOPs = 2 x multiply-accumulates
    feature_shapes: list[tuple[int, ...]]  # per stage, C x H x W


@dataclass
class Experiment:
    network: nn.Module  # what the step calls: the TrainingNetwork, possibly DDP- and compile-wrapped
    model: nn.Module  # the plain model inside it: what is evaluated and exported
    terms: list[LossTerm]  # the plain terms inside it
    plan: BatchPlan  # the run's batch plan (data/plans/), inside it too: the step composes its batch with it
    teacher: Optional[FrozenTeacher]
    loaders: Loaders
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    autocast_dtype: Optional[torch.dtype]
    profile: ModelProfile
    lr: float
    batch_transforms: list  # data/batch_transforms.py, applied by the step
    memory_format: torch.memory_format = torch.contiguous_format  # of the model, and so of its inputs
    grad_clip: float = 0.0  # max global gradient norm (engine/optim.py); 0: none

    def autocast(self, device: torch.device):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device.type, dtype=self.autocast_dtype)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


_TOO_SMALL = ("Output size is too small", "can't be greater than actual input size")  # torch's pooling, convolution


def profile_model(model: nn.Module, image_size: int, name: str = "the model") -> ModelProfile:
    """Parameters, FLOPs and stage shapes from one forward pass of one image in eval mode; an image too small
    for the model's pooling is a ``ConfigError``."""
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            _, feats = model(torch.zeros(1, 3, image_size, image_size))
    except RuntimeError as error:
        if not any(text in str(error) for text in _TOO_SMALL):
            raise
        raise ConfigError(
            f"model.name={name} cannot take {image_size}x{image_size} images: its pooling shrinks them "
            f"to nothing ({str(error).splitlines()[0]}); use a larger data.image_size or another "
            f"model"
        ) from None
    model.train()
    return ModelProfile(
        parameters=sum(p.numel() for p in model.parameters()),
        forward_flops=counter.get_total_flops(),
        feature_shapes=[tuple(f.shape[1:]) for f in feats],
    )


def smallest_train_batch(num_train: int, world_size: int, batch: int) -> int:
    """The fewest images of any training batch of one rank: the last one, where the rank's share of the data
    (data/sharding.py) is not a multiple of the batch size. Every forward pass of the model trains on at least
    this many: a batch plan's partners and second views (data/plans/) come on top of a batch's images, and DLB's
    parts each hold a whole batch's."""
    per_rank = num_train // world_size
    return per_rank % batch or min(batch, per_rank)


def check_trains_on_smallest_batch(
    model: nn.Module, image_size: int, smallest: int, num_train: int, world_size: int, batch: int, name: str
) -> None:
    """Refuse a model that cannot train on the run's smallest batch: where that batch holds one image, a
    BatchNorm layer whose feature map has shrunk to 1x1 sees one value per channel in train mode and PyTorch
    stops. Checked by a forward pass in train mode of one image on the CPU, the model's state (its BatchNorm
    statistics) and the random generator left as they were. (The last batch is never dropped: a run sees
    every image each epoch, as the published protocols do.)"""
    if smallest >= 2:  # BatchNorm sees at least two values per channel; nothing else depends on the batch size
        return
    state = {key: value.clone() for key, value in model.state_dict().items()}
    rng = torch.get_rng_state()
    try:
        model(torch.zeros(1, 3, image_size, image_size))
    except ValueError as error:
        if "Expected more than 1 value per channel" not in str(error):
            raise
        per_rank = num_train // world_size
        if per_rank == 1:
            what, fix = "1 training image per process", "give it more training images"
        elif batch == 1:
            what, fix = "batches of 1 image", "use train.batch_size >= 2"
        else:
            better = next(b for b in range(batch + 1, batch + per_rank + 2) if per_rank % b != 1)
            what = (
                f"its last training batch of each epoch, 1 image ({per_rank} images per process, "
                f"train.batch_size={batch * world_size})"
            )
            fix = f"choose a train.batch_size that leaves no single image over (e.g. {better * world_size})"
        raise ConfigError(
            f"model.name={name} cannot train on {what} at data.image_size={image_size}: a BatchNorm "
            f"layer's 1x1 feature map then gives it one value per channel; {fix}, or use a larger "
            f"data.image_size"
        ) from None
    finally:
        model.load_state_dict(state)
        torch.set_rng_state(rng)


def run_plan(config, terms: list[LossTerm]) -> BatchPlan:
    """The run's batch plan: ``batch.plan``, or with ``auto`` the one its loss terms need (data/plans/
    ``choose_plan``: a run has one), refused where it cannot take one of ``batch.transforms``."""
    needs = {name: term.batch_plan for name, term in zip(config.loss.terms, terms) if term.batch_plan is not None}
    name = choose_plan(config.batch.plan, needs)
    plan = build_plan(name, config.batch)
    clash = [transform for transform in config.batch.transforms if transform in plan.refuses_batch_transforms]
    if clash:
        needer = next((f" (loss.{term} needs it)" for term, plan_name in needs.items() if plan_name == name), "")
        raise ConfigError(
            f"batch plan {name}{needer} pairs the images of its batch, and batch.transforms {clash} would "
            f"mix across its pairs; remove {', '.join(clash)} from batch.transforms"
        )
    return plan


def check_terms_combine(config) -> None:
    """What ``build_experiment`` refuses about how the loss terms, the batch plan and the batch transforms
    combine, from the config alone (no data, no model): the launchers check every job with it before any
    starts."""
    terms = build_loss_terms(config.loss.terms, config.loss)
    build_batch_transforms(config.batch.transforms, config.batch)
    run_plan(config, terms)


def per_rank_batch(global_batch: int, world_size: int, key: str) -> int:
    if global_batch % world_size:
        raise ConfigError(
            f"{key}={global_batch} is not divisible by the {world_size} processes; use a multiple of {world_size}"
        )
    return global_batch // world_size


def build_experiment(config, dist: DistContext) -> Experiment:
    train_cfg = config.train
    seed_everything(config.seed, train_cfg.deterministic)
    batch = per_rank_batch(train_cfg.batch_size, dist.world_size, "train.batch_size")
    if config.model.sync_bn and dist.distributed and dist.device.type != "cuda":
        raise ConfigError(
            "model.sync_bn=true needs GPUs: PyTorch's SyncBatchNorm has no CPU implementation "
            "(set model.sync_bn=false for CPU runs)"
        )
    eval_batch = max(1, -(-train_cfg.eval_batch_size // dist.world_size))
    terms = build_loss_terms(config.loss.terms, config.loss)
    batch_transforms = build_batch_transforms(config.batch.transforms, config.batch)
    plan = run_plan(config, terms)
    data = build_dataset(config.data)
    loaders = build_loaders(
        config.data, data, batch, eval_batch, dist.device, config.seed, plan, dist.rank, dist.world_size
    )

    model = build_configured_model(config.model, loaders.num_classes)
    check_model_serves_terms(model, config.loss.terms, config.model.name)
    if config.model.weights:
        load_model_weights(model, config.model.weights, what="model.weights", skip=config.model.weights_skip)
    profile = profile_model(model, loaders.image_size, config.model.name)
    check_trains_on_smallest_batch(
        model,
        loaders.image_size,
        smallest_train_batch(loaders.num_train, dist.world_size, batch),
        loaders.num_train,
        dist.world_size,
        batch,
        config.model.name,
    )
    setup = TrainingSetup(loaders.num_train, loaders.num_classes, train_cfg.epochs, tuple(profile.feature_shapes))
    for term in terms:
        term.check_features(profile.feature_shapes)
        term.attach(setup)
    teacher = None
    if any(term.requires_teacher for term in terms):
        teacher = build_teacher(config.teacher, loaders.num_classes, dist.device)

    memory_format = torch.channels_last if train_cfg.channels_last else torch.contiguous_format
    if teacher is not None:
        teacher = teacher.to(memory_format=memory_format)
    plain = TrainingNetwork(model, terms, plan).to(dist.device, memory_format=memory_format)
    if dist.distributed and config.model.sync_bn:
        plain = nn.SyncBatchNorm.convert_sync_batchnorm(plain)
    network = plain
    if dist.distributed:
        # No buffer broadcast per step: in train mode BatchNorm normalises with each rank's batch, and the
        # trainer gives every rank rank 0's buffers before each evaluation (PS-KD's N x K table, also a
        # buffer, is kept equal on every rank by the term itself).
        network = DistributedDataParallel(
            plain, device_ids=[dist.device.index] if dist.device.type == "cuda" else None, broadcast_buffers=False
        )
    if train_cfg.compile:  # the whole step: the model and every loss term in one graph, and the teacher
        network = torch.compile(network)
        if teacher is not None:
            teacher = torch.compile(teacher)

    lr = train_cfg.lr
    if train_cfg.lr_scaling == "linear":
        lr = lr * train_cfg.batch_size / train_cfg.lr_base_batch_size
    # The model's parameters and those of the terms (e.g. BYOT's heads), with the same settings.
    optimizer = build_optimizer(
        plain,
        train_cfg,
        lr,
        # Fused: one kernel for all parameters on GPUs; and GradScaler reads the inf
        # check of a non-fused optimizer on the host, a device sync per fp16 step.
        fused=dist.device.type == "cuda" or train_cfg.amp == "fp16",
    )
    scheduler = build_lr_scheduler(optimizer, train_cfg, len(loaders.train))
    autocast_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[train_cfg.amp]
    scaler = torch.amp.GradScaler(dist.device.type, enabled=train_cfg.amp == "fp16")
    return Experiment(
        network,
        plain.model,
        list(plain.terms),
        plain.plan,
        teacher,
        loaders,
        optimizer,
        scheduler,
        scaler,
        autocast_dtype,
        profile,
        lr,
        batch_transforms,
        memory_format,
        train_cfg.grad_clip,
    )
