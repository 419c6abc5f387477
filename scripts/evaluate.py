"""Top-1 / top-5 accuracy of a checkpoint on a dataset's test split.

    python scripts/evaluate.py runs/cifar100/resnet110_ce/best.pt                 # the run's own config
    python scripts/evaluate.py weights.pt --config configs/cifar100/resnet20_ce.yaml [KEY=VALUE ...]

The model and the data come from --config, or else from the config.yaml saved beside the checkpoint;
KEY=VALUE overrides apply on top (e.g. data.root=/data train.device=cpu). The checkpoint is a run's
best.pt/last.pt or a bare state_dict, loaded with weights_only=True. Bad input: one line, exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data import build_dataset, build_loaders  # noqa: E402
from engine.checkpoint import load_model_weights  # noqa: E402
from engine.cli import exit_with  # noqa: E402
from engine.config import load_config  # noqa: E402
from engine.distributed import choose_device  # noqa: E402
from core.errors import CheckpointError, ConfigError  # noqa: E402
from engine.run_dir import CONFIG_FILE  # noqa: E402
from engine.trainer import evaluate  # noqa: E402
from models import build_model  # noqa: E402


def evaluate_checkpoint(checkpoint: Path, config_path: Path | None, overrides: list[str]) -> dict:
    if not checkpoint.is_file():
        raise CheckpointError(f"checkpoint not found: {checkpoint}")
    if config_path is None:
        config_path = checkpoint.parent / CONFIG_FILE
        if not config_path.is_file():
            raise ConfigError(f"no {CONFIG_FILE} beside {checkpoint}; pass --config to say which model and data")
    config = load_config(config_path, overrides)
    device = choose_device(config.train.device, local_rank=0)
    data = build_dataset(config.data)
    loaders = build_loaders(config.data, data, config.train.batch_size, config.train.eval_batch_size, device,
                            config.seed)
    model = build_model(config.model.name, loaders.num_classes)
    load_model_weights(model, checkpoint, what="checkpoint", model_name=config.model.name,
                       num_classes=loaders.num_classes)
    result = evaluate(model.to(device), loaders.test, device)
    return {"checkpoint": str(checkpoint), "model": config.model.name, "dataset": config.data.name,
            "images": result["count"], "acc1": result["acc1"], "acc5": result["acc5"], "loss": result["loss"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a run's best.pt / last.pt, or a state_dict file")
    parser.add_argument("--config", type=Path, help="experiment YAML (default: the config.yaml beside the checkpoint)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. data.root=/data")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = parser.parse_intermixed_args(argv)
    result = evaluate_checkpoint(args.checkpoint, args.config, args.overrides)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['model']} {result['checkpoint']} on {result['dataset']} test ({result['images']} images): "
              f"top-1 {result['acc1']:.2f}%  top-5 {result['acc5']:.2f}%  loss {result['loss']:.4f}")
    return 0


if __name__ == "__main__":
    exit_with(main)
