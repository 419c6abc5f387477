"""Training-step and data-loader speed, side by side in one process.

    python scripts/benchmark.py --model resnet20 --batch-size 128 --device cpu
    python scripts/benchmark.py --model resnet20 --batch-size 128 --device cuda --amp bf16 --compile --json gpu.json
    python scripts/benchmark.py --model timm/resnet18 --compare-model resnet18 --methods ce,tffd   (any timm model)
    python scripts/benchmark.py --model timm/vit_tiny_patch16_224 \
        --set "model.timm_kwargs={img_size: 32, patch_size: 4}" --methods ce,tffd,tffd_released

Times the training step of each method (ce, tffd, kd, kd_tffd: the loss terms of
configs/_base_/methods/<method>.yaml, the KD teacher given by --teacher) and the two data loaders.
``tffd_released`` is the tffd step with the term replaced by a literal transcription of the released
code's loss (scripts/released_tffd.py): the reference the training term's cost is held to.
The step is ``engine.step``'s, the one the trainer runs, built by the trainer's own builder; its
inputs are a few batches already on the device, so the step and the data path are timed apart.
Methods are timed in interleaved rounds (every round times --steps steps of each method, in a
rotating order) and each figure is the median over rounds; the ratio to ce is the median of the
per-round ratios, so a slow spell of a shared machine hits both sides of a ratio alike. With
--compile every method's eager step is timed too, in the same rounds, and the table gives compiled /
eager per method (median of the per-round ratios): a compiled step slower than the eager one shows.
The teacher has random weights: its cost matters here, not its accuracy.

Before timing, the training term (losses/tffd.py) is checked against the transcription on the model's
real stage features: values and gradients must agree to fp32 rounding (exit code 1 if not).
The table also says how large the stage features are next to the model's compute (bytes of stage
features per forward FLOP): Tf-FD's cost is memory traffic over those features, so its share of a
step grows with that figure.
With --compare-model, each method is also built on that model and timed in the same rounds (rows
``<method>@<model>``, their ratios against ``ce@<model>``), and the table gives the per-round ratio of the
two models' steps per method. ``--set KEY=VALUE`` passes any config override to --model's experiments.
Bad input: one line, exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from core.errors import ConfigError
from data import build_dataset, build_loaders
from engine.builder import build_experiment
from engine.checkpoint import unwrap
from engine.cli import exit_with
from engine.config import load_config
from engine.distributed import DistContext, choose_device
from engine.output_paths import check_output_file
from engine.step import apply_gradients, compute_losses
from losses import StepOutput
from losses.base import epoch_tensor
from losses.tffd import TeacherFreeFD
from models import MODELS, build_model
from models.timm_backbone import is_timm_name
from scripts.released_tffd import ReleasedTfFD

REPO = Path(__file__).resolve().parents[1]

METHODS = ("ce", "tffd", "tffd_released", "kd", "kd_tffd")
EAGER = "/eager"  # the key of a method's eager twin, timed beside its compiled step (--compile)
COMPILED_TFFD_TARGET = 1.03  # compiled Tf-FD step time at most this times the compiled ce step time
MiB = 2**20


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet20", help="student backbone (default resnet20)")
    parser.add_argument("--teacher", default="resnet110", help="KD teacher backbone (random weights)")
    parser.add_argument("--compare-model", help="another student backbone, timed in the same interleaved rounds")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for --model's experiments (repeatable), e.g. model.timm_kwargs=...",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none", help="mixed precision (train.amp)")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the step: model and loss terms in "
        "one graph, and the teacher (train.compile); the eager step is timed beside it",
    )
    parser.add_argument("--channels-last", action="store_true", help="channels_last format (train.channels_last)")
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated subset of {','.join(METHODS)}; must include ce, the baseline of every ratio",
    )
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=32, help="side of the synthetic images")
    parser.add_argument("--rounds", type=int, default=21, help="interleaved timing rounds (median over them)")
    parser.add_argument("--steps", type=int, default=1, help="training steps per method and round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per method first (compile, autotune)")
    parser.add_argument("--loader-images", type=int, default=10000, help="images per loader timing epoch; 0 skips them")
    parser.add_argument(
        "--workers", type=int, default=min(4, os.cpu_count() or 1), help="DataLoader workers of the torchvision loader"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    for key in ("batch_size", "rounds", "steps", "num_classes", "image_size"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1")
    if args.warmup < 0 or args.loader_images < 0 or args.workers < 0:
        parser.error("--warmup, --loader-images and --workers must be >= 0")
    return args


# ---------------------------------------------------------------- building what the trainer builds
def method_config(method: str, args, overrides: list[str], compiled: bool | None = None, model: str | None = None):
    """The config of one method: its loss terms from configs/_base_/methods, the rest from the CLI
    (``compiled`` in place of --compile where given; ``model`` in place of --model, without --set)."""
    compiled = args.compile if compiled is None else compiled
    extra = args.set if model is None else []
    return load_config(
        REPO / "configs" / "_base_" / "methods" / f"{method}.yaml",
        [
            f"model.name={model or args.model}",
            f"train.batch_size={args.batch_size}",
            f"train.device={args.device}",
            f"train.amp={args.amp}",
            f"train.compile={str(compiled).lower()}",
            f"train.channels_last={str(args.channels_last).lower()}",
            "train.milestones=[]",
            "data.name=synthetic",
            f"data.num_classes={args.num_classes}",
            f"data.image_size={args.image_size}",
            *overrides,
            *extra,
        ],
    )


def build_methods(methods: list[str], args, device: torch.device, workdir: Path) -> dict:
    """Each method's (config, experiment) by name; with --compile also its eager twin, as ``<method>/eager``."""
    teacher_file = workdir / f"{args.teacher}_random.pt"
    torch.save(build_model(args.teacher, args.num_classes).state_dict(), teacher_file)
    overrides = [
        f"data.num_train={4 * args.batch_size}",
        f"data.num_test={args.batch_size}",
        f"teacher.model={args.teacher}",
        f"teacher.checkpoint={teacher_file}",
    ]
    dist = DistContext(rank=0, world_size=1, local_rank=0, device=device)
    experiments = {}
    variants = [(method, args.compile) for method in methods] + [(method, False) for method in methods if args.compile]
    for method, compiled in variants:
        config = method_config("tffd" if method == "tffd_released" else method, args, overrides, compiled)
        exp = build_experiment(config, dist)
        if method == "tffd_released":  # swapped in before the first step, so before any compilation
            network = unwrap(exp.network)
            network.terms = torch.nn.ModuleList([released_term(term, config) for term in network.terms])
            exp.terms = list(network.terms)
        experiments[method + (EAGER if args.compile and not compiled else "")] = (config, exp)
    if args.compare_model:
        for method, compiled in variants:
            if method != "tffd_released":
                config = method_config(method, args, overrides, compiled, model=args.compare_model)
                key = f"{method}@{args.compare_model}" + (EAGER if args.compile and not compiled else "")
                experiments[key] = (config, build_experiment(config, dist))
    return experiments


def baseline_of(key: str) -> str:
    """The ce row a row's ratio is taken against: ``ce`` with the row's suffixes (``@<model>``, ``/eager``)."""
    return "ce" + key[len(re.split(r"[/@]", key, maxsplit=1)[0]) :]


def tffd_term(exp) -> TeacherFreeFD:
    """The experiment's Tf-FD term."""
    return next(term for term in exp.terms if isinstance(term, TeacherFreeFD))


def released_term(term, config):
    """The transcription in place of the tffd term (compiled with the network, as the builder does)."""
    return ReleasedTfFD(config.loss.tffd) if isinstance(term, TeacherFreeFD) else term


# ---------------------------------------------------------------- timing
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_steps(exp, batches: list, steps: int, epoch: torch.Tensor) -> None:
    for step in range(steps):
        images, targets, indices = batches[step % len(batches)]
        apply_gradients(exp, compute_losses(exp, images, targets, epoch, indices).total)


def time_methods(experiments: dict, args, device: torch.device) -> dict:
    runs = {}
    for method, (config, exp) in experiments.items():
        exp.network.train()
        exp.loaders.train.set_epoch(1)
        # The last epoch of the schedule: past any loss warm-up, so every term does its full work.
        batches = list(exp.loaders.train)
        runs[method] = (exp, batches, epoch_tensor(config.train.epochs, device))
        train_steps(exp, batches, args.warmup, runs[method][2])
    synchronize(device)
    wall = {method: [] for method in runs}
    cpu = {method: [] for method in runs}
    peak = {method: 0 for method in runs}
    names = list(runs)
    for round_index in range(args.rounds):
        shift = round_index % len(names)
        for method in names[shift:] + names[:shift]:
            exp, batches, epoch = runs[method]
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
            began_wall, began_cpu = time.perf_counter(), time.process_time()
            train_steps(exp, batches, args.steps, epoch)
            synchronize(device)
            wall[method].append((time.perf_counter() - began_wall) / args.steps)
            cpu[method].append((time.process_time() - began_cpu) / args.steps)
            if device.type == "cuda":
                peak[method] = max(peak[method], torch.cuda.max_memory_allocated(device) - before)
    results = {}
    for method in names:
        ms = 1000 * statistics.median(wall[method])
        baseline = baseline_of(method)  # eager twins against the eager ce, a compared model's against its own
        ratios = [mine / base for mine, base in zip(wall[method], wall[baseline])]
        results[method] = {
            "ms_per_step": ms,
            "images_per_s": args.batch_size / ms * 1000,
            "ratio_to_ce": statistics.median(ratios),
            "ratio_to_ce_ci95": median_ci95(ratios),
            "peak_memory_mib": peak[method] / MiB if device.type == "cuda" else None,
            "cpu_ms_per_step": 1000 * statistics.median(cpu[method]) if device.type == "cpu" else None,
            "cpu_ratio_to_ce": (
                statistics.median(c / b for c, b in zip(cpu[method], cpu[baseline])) if device.type == "cpu" else None
            ),
            "samples_ms": [1000 * sample for sample in wall[method]],
        }
    return with_model_ratios(with_eager_ratios(results, wall), wall)


def with_model_ratios(results: dict, wall: dict) -> dict:
    """The compared model's rows, each with the median per-round ratio of --model's step to its step."""
    for key, row in results.items():
        if "@" in key:
            main = key.replace("@" + key.split("@", 1)[1], "")
            ratios = [mine / theirs for mine, theirs in zip(wall[main], wall[key])]
            row.update(model_ratio=statistics.median(ratios), model_ratio_ci95=median_ci95(ratios))
    return results


def with_eager_ratios(results: dict, wall: dict) -> dict:
    """The compiled methods' rows, each with its eager twin's ms/step and the median per-round ratio
    compiled / eager (where the eager twins were timed: --compile)."""
    rows = {method: row for method, row in results.items() if not method.endswith(EAGER)}
    for method, row in rows.items():
        if method + EAGER in results:
            ratios = [mine / eager for mine, eager in zip(wall[method], wall[method + EAGER])]
            row.update(
                eager_ms_per_step=results[method + EAGER]["ms_per_step"],
                eager_samples_ms=results[method + EAGER]["samples_ms"],
                compiled_to_eager=statistics.median(ratios),
                compiled_to_eager_ci95=median_ci95(ratios),
            )
    return rows


def time_tffd_terms(experiments: dict, args, device: torch.device) -> dict:
    """The Tf-FD term alone, forward + backward on fixed stage features of the model, against the
    released transcription, in interleaved rounds: the loss's own cost, without the network's noise."""
    exp = next((exp for method, (_, exp) in experiments.items() if method in ("tffd", "kd_tffd")), None)
    if exp is None:
        return {}
    term = tffd_term(exp)
    images, targets, _ = next(iter(exp.loaders.train))
    with torch.no_grad(), exp.autocast(device):
        logits, feats = exp.model(images.contiguous(memory_format=exp.memory_format))
    leaves = [feature.detach().requires_grad_() for feature in feats]
    step = StepOutput(logits, leaves, targets, epoch=10**6)
    terms = {"tffd": term, "tffd_released": ReleasedTfFD(term.config)}

    def once(loss_term) -> None:
        with exp.autocast(device):
            total = sum(loss_term(step).values())
        total.backward()
        for leaf in leaves:
            leaf.grad = None

    for loss_term in terms.values():
        for _ in range(max(args.warmup, 1)):
            once(loss_term)
    samples = {name: [] for name in terms}
    for _ in range(args.rounds):
        for name, loss_term in terms.items():
            synchronize(device)
            began = time.perf_counter()
            once(loss_term)
            synchronize(device)
            samples[name].append(time.perf_counter() - began)
    ratios = [mine / theirs for mine, theirs in zip(samples["tffd"], samples["tffd_released"])]
    return {name: {"ms": 1000 * statistics.median(times)} for name, times in samples.items()} | {
        "ratio": statistics.median(ratios),
        "ratio_ci95": median_ci95(ratios),
    }


def median_ci95(samples: list[float], resamples: int = 2000) -> list[float]:
    """A 95% bootstrap confidence interval of the median of ``samples`` (a fixed seed: the same
    samples always give the same interval). How far a shared machine's noise leaves the median open."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(samples, k=len(samples))) for _ in range(resamples))
    return [medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]]


def time_loaders(args, device: torch.device) -> dict:
    """Images/s of each loader over epochs of the same synthetic images (median of up to 3 epochs)."""
    config = method_config(
        "ce", args, [f"data.num_train={args.loader_images}", "data.num_test=1", f"data.num_workers={args.workers}"]
    )
    data = build_dataset(config.data)
    loaders = {
        kind: build_loaders(
            dataclasses.replace(config.data, loader=kind), data, args.batch_size, 1, device, config.seed
        ).train
        for kind in ("device", "torchvision")
    }
    rates = {kind: [] for kind in loaders}
    for epoch in range(1, min(args.rounds, 3) + 1):
        for kind, loader in loaders.items():
            loader.set_epoch(epoch)
            synchronize(device)
            began, count = time.perf_counter(), 0
            for images, *_ in loader:
                count += images.shape[0]
            synchronize(device)
            rates[kind].append(count / (time.perf_counter() - began))
    return {
        "device": {"images_per_s": statistics.median(rates["device"])},
        "torchvision": {"images_per_s": statistics.median(rates["torchvision"]), "workers": args.workers},
    }


# ---------------------------------------------------------------- the reference check
def reference_check(exp, images: torch.Tensor) -> dict:
    """The training term against the released transcription on the model's fp32 stage features."""
    with torch.no_grad():
        logits, feats = exp.model(images.float())
    term = tffd_term(exp)
    terms = (term, ReleasedTfFD(term.config))
    inputs = [[feature.float().clone().requires_grad_() for feature in feats] for _ in terms]
    targets = torch.zeros(images.shape[0], dtype=torch.long)
    values = [sum(t(StepOutput(logits, leaves, targets, epoch=10**6)).values()) for t, leaves in zip(terms, inputs)]
    grads = [torch.autograd.grad(value, leaves) for value, leaves in zip(values, inputs)]
    grad_diff = max(
        ((mine - theirs).abs().max() / theirs.abs().max().clamp_min(1e-30)).item() for mine, theirs in zip(*grads)
    )
    value_diff = ((values[0] - values[1]).abs() / values[1].abs().clamp_min(1e-30)).item()
    return {
        "feature_shapes": [list(f.shape) for f in feats],
        "max_relative_value_diff": value_diff,
        "max_relative_grad_diff": grad_diff,
        "agrees": value_diff < 1e-5 and grad_diff < 1e-4,
    }


def feature_cost(exp, batch_size: int) -> dict:
    """Bytes of fp32 stage features per step and per forward FLOP: what Tf-FD's cost scales with."""
    feature_bytes = 4 * batch_size * sum(c * h * w for c, h, w in exp.profile.feature_shapes)
    return {
        "stage_feature_mib": feature_bytes / MiB,
        "bytes_per_forward_flop": feature_bytes / (batch_size * exp.profile.forward_flops),
    }


# ---------------------------------------------------------------- reporting
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    model = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")),
        platform.processor() or "unknown CPU",
    )
    return f"cpu ({model}, {torch.get_num_threads()} threads)"


def _load_average() -> float | None:
    """The 1-minute load average (runnable processes), where the OS reports one."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def table(result: dict) -> str:
    settings, methods, on_cpu = result["settings"], result["methods"], result["device"].startswith("cpu")
    width = max(14, *(len(method) + 2 for method in methods))
    lines = [
        f"{settings['model']} training step, batch {settings['batch_size']}, {result['device']}, "
        f"amp {settings['amp']}, {'compiled' if settings['compile'] else 'eager'}"
        f"{', channels_last' if settings['channels_last'] else ''}, torch {result['torch']}; "
        f"median of {settings['rounds']} interleaved rounds of {settings['steps']} steps",
        f"{'method':{width}s}{'ms/step':>10s}{'cpu ms/step' if on_cpu else '':>13s}{'images/s':>11s}"
        f"{'ratio to ce':>13s}{'peak memory':>14s}"
        + (f"{'eager ms/step':>15s}{'compiled/eager':>16s}" if settings["compile"] else ""),
    ]
    for method, row in methods.items():
        cpu = f"{row['cpu_ms_per_step']:.1f}" if row["cpu_ms_per_step"] is not None else ""
        memory = f"{row['peak_memory_mib']:.0f} MiB" if row["peak_memory_mib"] is not None else "n/a"
        eager = (
            f"{row['eager_ms_per_step']:15.1f}{row['compiled_to_eager']:16.3f}" if "compiled_to_eager" in row else ""
        )
        lines.append(
            f"{method:{width}s}{row['ms_per_step']:10.1f}{cpu:>13s}{row['images_per_s']:11.0f}"
            f"{row['ratio_to_ce']:13.3f}{memory:>14s}{eager}"
        )
    compared = {method: row for method, row in methods.items() if "model_ratio" in row}
    if compared:
        lines.append(
            f"{settings['model']} step / {settings['compare_model']} step, median of per-round ratios: "
            + ", ".join(
                f"{method.split('@')[0]} {row['model_ratio']:.3f} (95% interval "
                f"{row['model_ratio_ci95'][0]:.3f}-{row['model_ratio_ci95'][1]:.3f})"
                for method, row in compared.items()
            )
        )
    if result["loaders"]:
        lines.append(f"{'loader':14s}{'images/s':>10s}   (loader only, {settings['loader_images']} images per epoch)")
        for kind, row in result["loaders"].items():
            extra = f"   {row['workers']} workers" if "workers" in row else ""
            lines.append(f"{kind:14s}{row['images_per_s']:10.0f}{extra}")
    cost = result.get("feature_cost")
    if cost:
        per_ms = cost["stage_feature_mib"] / methods["ce"]["ms_per_step"]
        lines.append(
            f"stage features: {cost['stage_feature_mib']:.1f} MiB per step (fp32), "
            f"{cost['bytes_per_forward_flop']:.4f} bytes per forward FLOP, {per_ms:.3f} MiB per ms of the "
            f"ce step (Tf-FD's extra cost grows with these)"
        )
    alone = result.get("tffd_term_alone")
    if alone:
        low, high = alone["ratio_ci95"]
        lines.append(
            f"Tf-FD term alone (forward + backward on the model's stage features): tffd {alone['tffd']['ms']:.2f} "
            f"ms, tffd_released {alone['tffd_released']['ms']:.2f} ms, ratio {alone['ratio']:.3f} "
            f"(95% interval {low:.3f}-{high:.3f})"
        )
    for name, target in result["targets"].items():
        lines.append(
            f"target {name}: {target['measured']:.3f} <= {target['max_ratio']:.3f} "
            f"({'met' if target['met'] else 'not met'}; {target['what']})"
        )
    load = settings.get("load_average", {})
    if load.get("before") is not None:
        lines.append(f"1-minute load average of the machine: {load['before']:.2f} before, {load['after']:.2f} after")
    check = result.get("reference_check")
    if check:
        verdict = "agrees with" if check["agrees"] else "DIFFERS FROM"
        lines.append(
            f"reference check: the training term {verdict} the released transcription (fp32): values within "
            f"{check['max_relative_value_diff']:.1e}, gradients within {check['max_relative_grad_diff']:.1e} "
            f"(relative)"
        )
    return "\n".join(lines)


def run(args) -> dict:
    methods = [method.strip() for method in args.methods.split(",") if method.strip()]
    unknown = [method for method in methods if method not in METHODS]
    if unknown or "ce" not in methods or len(set(methods)) != len(methods):
        raise ConfigError(f"--methods {args.methods!r}: list each of {', '.join(METHODS)} at most once, ce included")
    for name in (args.model, args.teacher, args.compare_model):
        if name is not None and name not in MODELS and not is_timm_name(name):
            raise ConfigError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    device = choose_device(args.device, local_rank=0)
    with tempfile.TemporaryDirectory() as workdir:
        experiments = build_methods(methods, args, device, Path(workdir))
    tffd_method = next((m for m in methods if m in ("tffd", "kd_tffd")), None)
    load_before = _load_average()
    check, cost = None, feature_cost(experiments["ce"][1], args.batch_size)
    if tffd_method is not None:
        exp = experiments[tffd_method][1]
        images, *_ = next(iter(exp.loaders.train))
        check = reference_check(exp, images)
    result = {
        "device": device_name(device),
        "torch": torch.__version__,
        "settings": {
            "model": args.model,
            "compare_model": args.compare_model,
            "overrides": args.set,
            "teacher": args.teacher,
            "batch_size": args.batch_size,
            "amp": args.amp,
            "compile": args.compile,
            "channels_last": args.channels_last,
            "rounds": args.rounds,
            "steps": args.steps,
            "warmup": args.warmup,
            "image_size": args.image_size,
            "num_classes": args.num_classes,
            "loader_images": args.loader_images,
            "threads": torch.get_num_threads(),
        },
        "methods": time_methods(experiments, args, device),
        "tffd_term_alone": time_tffd_terms(experiments, args, device),
        "loaders": time_loaders(args, device) if args.loader_images else {},
        "reference_check": check,
        "feature_cost": cost,
    }
    # A shared machine's other work slows some rounds: the load average says how busy it was.
    result["settings"]["load_average"] = {"before": load_before, "after": _load_average()}
    result["targets"] = targets(result["methods"], args.compile)
    return result


def targets(methods: dict, compiled: bool) -> dict:
    """What the Tf-FD term's cost is held to: the released code's loss, and compiled, 1.03 x ce."""
    out = {}
    if "tffd" in methods and "tffd_released" in methods:
        released = methods["tffd_released"]["ratio_to_ce"]
        out["tffd_vs_released"] = {
            "measured": methods["tffd"]["ratio_to_ce"],
            "max_ratio": released,
            "met": methods["tffd"]["ratio_to_ce"] <= released,
            "what": "tffd / ce against tffd_released / ce, the same rounds",
        }
    if "tffd" in methods and compiled:
        measured = methods["tffd"]["ratio_to_ce"]
        out["tffd_compiled_vs_ce"] = {
            "measured": measured,
            "max_ratio": COMPILED_TFFD_TARGET,
            "met": measured <= COMPILED_TFFD_TARGET,
            "what": "compiled tffd / compiled ce",
        }
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.json:
        check_output_file(args.json, "--json")
    result = run(args)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    check = result["reference_check"]
    if check is not None and not check["agrees"]:
        print("error: the Tf-FD training term differs from the released transcription", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    exit_with(main)
