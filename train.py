"""Train a model with the loss terms its config lists (cross-entropy, Tf-FD, KD, ...).

    python train.py --config configs/quickstart.yaml [KEY=VALUE ...] [--run-dir DIR] [--overwrite]
    torchrun --nproc_per_node=N train.py --config ...        (DDP; train.batch_size stays global)

Re-running the same command resumes an unfinished run from its last.pt.
"""

from __future__ import annotations

import argparse

from engine.cli import exit_with, record_bugs
from engine.session import run_experiment


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="experiment YAML file")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="set any config field, e.g. loss.tffd.lambda_intra=1e-3 train.epochs=2",
    )
    parser.add_argument("--run-dir", help="output directory (default: runs/<config path>[/<overrides>])")
    parser.add_argument("--overwrite", action="store_true", help="replace a run directory's previous outputs")
    parser.add_argument("--help-config", action="store_true", help="list every config key with its type and default")
    args = parser.parse_args(argv)
    if not args.help_config and not args.config:
        parser.error("--config is required")
    return args


@record_bugs  # under torchrun, a failing rank's traceback (never a UserError's) heads torchrun's summary
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.help_config:
        from engine.config import print_schema

        print_schema()
        return 0
    return run_experiment(args.config, args.overrides, args.run_dir, args.overwrite)


if __name__ == "__main__":
    exit_with(main)
