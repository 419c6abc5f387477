"""Top-1 / top-5 accuracy, NLL, ECE and AURC of a checkpoint on a dataset's test split.

    python scripts/evaluate.py runs/cifar100/resnet110_ce/best.pt                 # the run's own config
    python scripts/evaluate.py weights.pt --config configs/cifar100/resnet20_ce.yaml [KEY=VALUE ...]

The model and the data come from --config, or else from the config.yaml saved beside the checkpoint;
KEY=VALUE overrides apply on top (e.g. data.root=/data train.device=cpu; --data ROOT is short for
data.root=ROOT). The checkpoint is a run's best.pt/last.pt or a bare state_dict, loaded with
weights_only=True (engine/inference.py). Bad input: one line, exit code 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from engine.cli import exit_with
from engine.inference import add_checkpoint_arguments, checkpoint_overrides, load_trained
from engine.trainer import evaluate


def evaluate_checkpoint(checkpoint: Path, config_path: Path | None, overrides: list[str]) -> dict:
    trained = load_trained(checkpoint, config_path, overrides)
    result = evaluate(trained.model, trained.loaders.test, trained.device)
    config = trained.config
    return {
        "checkpoint": str(checkpoint),
        "model": config.model.name,
        "dataset": config.data.name,
        "images": result["count"],
        **{key: result[key] for key in ("acc1", "acc5", "loss", "nll", "ece", "aurc")},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_checkpoint_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = parser.parse_intermixed_args(argv)
    result = evaluate_checkpoint(args.checkpoint, args.config, checkpoint_overrides(args))
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['model']} {result['checkpoint']} on {result['dataset']} test ({result['images']} images): "
            f"top-1 {result['acc1']:.2f}%  top-5 {result['acc5']:.2f}%  NLL {result['nll']:.4f}  "
            f"ECE {result['ece']:.2f}%  AURC {result['aurc']:.1f} (x1e3)"
        )
    return 0


if __name__ == "__main__":
    exit_with(main)
