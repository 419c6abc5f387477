"""Sweep a grid over any config keys: one run directory per (point, seed), finished points skipped.

    python scripts/sweep.py --config configs/cifar100/resnet32_tffd.yaml \\
        --grid loss.tffd.lambda_intra=1e-4,4e-4,8e-4 --grid loss.tffd.lambda_inter=5e-4,5e-3 \\
        [--seeds 0,1,2] [--root DIR] [--gpus 0,1] [--jobs N] [--dry-run] [KEY=VALUE ...]
    python scripts/collect_results.py runs/sweeps/cifar100/resnet32_tffd     # the lambda grid

Each --grid is KEY=V1,V2,...; the grid is their product. Positional KEY=VALUE overrides apply to every
point. Runs go to <root>/<KEY=VALUE,...>/seed<k>, <root> defaulting to runs/sweeps/<config path under
configs/>[/<fixed overrides>]. Every point's config is checked before anything starts, so a typo in a key
fails at once. Jobs run through scripts/launch.py (GPU pool, restartable).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from core.errors import UserError
from engine.cli import exit_with
from engine.output_paths import check_output_dir
from engine.run_dir import default_run_dir, overrides_name
from scripts.launch import Job, add_launch_options, launch_from_args


def split_values(text: str) -> list[str]:
    """Split on the commas outside brackets, so list values like [100,150] stay whole."""
    values, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += char
    values.append(current)
    return [value.strip() for value in values]


def parse_grid(specs: list[str]) -> list[tuple[str, list[str]]]:
    axes = []
    for spec in specs:
        key, sep, values = spec.partition("=")
        values = split_values(values) if sep else []
        key = key.strip()
        if not key or not values or not all(values):
            raise UserError(f"--grid {spec!r} must look like KEY=V1,V2,... (e.g. loss.tffd.lambda_intra=1e-4,4e-4)")
        if key in (k for k, _ in axes):
            raise UserError(f"--grid names {key} twice; give all its values in one --grid {key}=V1,V2,...")
        twice = next((value for index, value in enumerate(values) if value in values[:index]), None)
        if twice is not None:
            raise UserError(f"--grid {key} lists {twice} twice")
        axes.append((key, values))
    return axes


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(seed) for seed in text.split(",")]
    except ValueError:
        raise UserError(f"--seeds takes a list like 0,1,2, got {text!r}") from None
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds lists a seed twice: {text}")
    return seeds


def sweep_jobs(
    config: str, axes: list[tuple[str, list[str]]], fixed: list[str], seeds: list[int | None], root: Path
) -> list[Job]:
    """One job per grid point and seed (``launch_from_args`` checks every job's config before any starts)."""
    jobs = []
    for values in itertools.product(*(values for _, values in axes)):
        point = [f"{key}={value}" for (key, _), value in zip(axes, values)]
        for seed in seeds:  # None: the grid's own seed axis
            overrides = [*fixed, *point] + ([f"seed={seed}"] if seed is not None else [])
            run_dir = root / overrides_name(point) / (f"seed{seed}" if seed is not None else "")
            jobs.append(Job(run_dir, config, tuple(overrides)))
    return jobs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="experiment YAML file")
    parser.add_argument(
        "--grid",
        action="append",
        required=True,
        metavar="KEY=V1,V2,...",
        help="one axis of the grid (repeat for more axes)",
    )
    parser.add_argument("--seeds", help="comma-separated seeds per point (default: 0; not with --grid seed=...)")
    parser.add_argument("--root", help="directory of the sweep's runs (default: runs/sweeps/<config>)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="fixed overrides for every point")
    add_launch_options(parser)
    args = parser.parse_intermixed_args(argv)
    axes = parse_grid(args.grid)
    if "seed" in (key for key, _ in axes):  # the grid sets the seed: --seeds adds none of its own
        if args.seeds is not None:
            raise UserError("--grid seed=... and --seeds both set the seed; use one of them")
        seeds = [None]
    else:
        seeds = parse_seeds(args.seeds if args.seeds is not None else "0")
    swept = {key for key, _ in axes} | {"seed"}
    clash = [o for o in args.overrides if o.partition("=")[0].strip() in swept]
    if clash:
        raise UserError(f"{clash[0]} sets a key the sweep varies (--grid / --seeds)")
    default_root = Path("runs", "sweeps", *default_run_dir(args.config, args.overrides).parts[1:])
    root = Path(args.root) if args.root else default_root
    check_output_dir(root, "--root")
    jobs = sweep_jobs(args.config, axes, args.overrides, seeds, root)
    return launch_from_args(jobs, args)


if __name__ == "__main__":
    exit_with(main)
