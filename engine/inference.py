"""A trained checkpoint with the model, config and test data it belongs to, for the scripts that read
one (``scripts/evaluate.py``, ``scripts/visualize.py``).

The config is ``--config`` or else the ``config.yaml`` saved beside the checkpoint, with ``KEY=VALUE``
overrides on top (``--data ROOT`` is short for ``data.root=ROOT``). The checkpoint is a run's
best.pt/last.pt or a bare state_dict, read with ``weights_only=True``; every problem is a ``UserError``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch

from core.errors import CheckpointError, ConfigError
from data import Loaders, build_dataset, build_loaders
from models import build_configured_model

from .checkpoint import load_model_weights
from .config import ExperimentConfig, load_config
from .distributed import choose_device
from .run_dir import CONFIG_FILE


def add_checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """CHECKPOINT, ``--config``, ``--data`` and ``KEY=VALUE`` overrides; read them with ``checkpoint_overrides``."""
    parser.add_argument("checkpoint", type=Path, help="a run's best.pt / last.pt, or a state_dict file")
    parser.add_argument("--config", type=Path, help="experiment YAML (default: the config.yaml beside the checkpoint)")
    parser.add_argument("--data", metavar="ROOT", help="dataset directory, short for data.root=ROOT")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.device=cpu")


def checkpoint_overrides(args: argparse.Namespace) -> list[str]:
    """The overrides ``add_checkpoint_arguments`` parsed; an explicit ``data.root=`` wins over ``--data``."""
    return ([f"data.root={args.data}"] if args.data is not None else []) + list(args.overrides)


def resolve_config(checkpoint: Path, config_path: Path | None, overrides: list[str]) -> ExperimentConfig:
    """The checked config of ``checkpoint``: ``config_path``, or else the config.yaml beside it."""
    if not checkpoint.is_file():
        raise CheckpointError(f"checkpoint not found: {checkpoint}")
    if config_path is None:
        config_path = checkpoint.parent / CONFIG_FILE
        if not config_path.is_file():
            raise ConfigError(f"no {CONFIG_FILE} beside {checkpoint}; pass --config to say which model and data")
    return load_config(config_path, overrides)


@dataclass
class Trained:
    config: ExperimentConfig
    device: torch.device
    loaders: Loaders
    model: torch.nn.Module  # on ``device``, with the checkpoint's weights


def load_trained(checkpoint: Path, config_path: Path | None, overrides: list[str]) -> Trained:
    """Resolve the config, build its data and model, and load the checkpoint's weights into the model
    (a wrong architecture or class count is one line naming the cause)."""
    config = resolve_config(checkpoint, config_path, overrides)
    device = choose_device(config.train.device, local_rank=0)
    data = build_dataset(config.data)
    loaders = build_loaders(
        config.data, data, config.train.batch_size, config.train.eval_batch_size, device, config.seed
    )
    model = build_configured_model(config.model, loaders.num_classes)
    load_model_weights(
        model, checkpoint, what="checkpoint", model_name=config.model.name, num_classes=loaders.num_classes
    )
    return Trained(config, device, loaders, model.to(device))
