"""What Tf-FD does to a trained network's stage features, as figures (PNG and PDF) and their numbers.

    python scripts/visualize.py runs/cifar100/resnet20_tffd/best.pt \\
        --compare runs/cifar100/resnet20_ce/best.pt --out figures/resnet20

The model, its config and the test data are resolved as scripts/evaluate.py does (--config, or the
config.yaml beside CHECKPOINT; --data ROOT; KEY=VALUE overrides). The --compare checkpoint (e.g. the
CE baseline) must hold the same architecture; it runs on the same test images. Both models run in
eval mode, without gradients, on the first --num-images test images. Written into --out:

  salience.png/.pdf      per stage, the channel salience (losses.tffd.channel_salience over those
                         images), sorted descending, the salient/redundant split marked
  similarity.png/.pdf    per stage, MSE and cosine similarity between the salient half and the
                         redundant half, paired as intra_fd pairs them (channels sorted by salience,
                         the first floor(C/2) against the next floor(C/2))
  maps.png/.pdf          for --images test images, each stage's --channels most and least salient
                         channel maps (maps_compare.png/.pdf for --compare)
  features.json          every number the figures show, with the definitions

Bad input (a missing checkpoint, --out naming a file, a count below 1, a --compare checkpoint of
another architecture, ...) is one line and exit code 2, before anything is written.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import torch
import torch.nn.functional as F
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from core.errors import CheckpointError, ConfigError, RunDirError
from engine.checkpoint import load_checkpoint, load_model_weights
from engine.cli import exit_with
from engine.inference import add_checkpoint_arguments, checkpoint_overrides, load_trained
from engine.output_paths import check_output_dir
from losses.tffd import channel_salience, salience_order, salient_and_redundant
from models import build_configured_model
from results.figures import FORMATS, new_figure, save  # shared with collect_results.py --plots

JSON_FILE = "features.json"
FIGURE_NAMES = ("salience", "similarity", "maps", "maps_compare")  # the last with --compare only
MAX_PANELS_PER_ROW = 4
DEFINITIONS = {
    "salience": "losses.tffd.channel_salience: per channel, the mean over images and positions of the map scaled "
    "to unit L2 norm over (H, W); unitless. Averaged over all the images used.",
    "order": "channel indices sorted by salience, descending (ties: lower index first), as intra_fd sorts them",
    "salient_half": "channels order[0:h], h = floor(C/2)",
    "redundant_half": "channels order[h:2h] (for odd C the least salient channel is in neither half)",
    "mse": "mean over images, paired channels and positions of (redundant - salient)^2: intra_fd over all the images "
    "used at once, in squared activation units",
    "cosine": "per image, the cosine similarity of the flattened salient half and the flattened redundant half "
    "(h*H*W values each, paired channel by channel), averaged over the images; in [-1, 1]",
}


@dataclass
class StageStats:
    channels: int
    height: int
    width: int
    salience: torch.Tensor  # (C,) in channel order, float64, on the CPU
    order: torch.Tensor  # (C,) channel indices, most salient first
    mse: float
    cosine: float

    @property
    def half(self) -> int:
        return self.channels // 2


@dataclass
class Run:
    """One checkpoint's model and what was measured on it."""

    role: str  # "checkpoint" or "compare"
    path: Path
    label: str
    model: torch.nn.Module
    stages: list[StageStats] = field(default_factory=list)
    maps: list[torch.Tensor] = field(default_factory=list)  # per stage, the shown images' features (CPU)


def positive(name: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, got {value}")


def default_label(path: Path) -> str:
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def load_compare(path: Path, checkpoint: Path, model_config, num_classes: int, device) -> torch.nn.Module:
    """The --compare checkpoint's weights in a model of the checkpoint's architecture (``model_config``: its
    config's ``model`` section, a timm model's keyword arguments included)."""
    what, model_name = "--compare checkpoint", model_config.name
    saved = load_checkpoint(path, what)
    saved_name = saved.get("model_name") if isinstance(saved, dict) else None
    if saved_name is not None and saved_name != model_name:
        raise CheckpointError(
            f"{what} {path} holds a {saved_name}, but {checkpoint} is a {model_name}; "
            f"compare two checkpoints of one architecture"
        )
    del saved
    model = build_configured_model(model_config, num_classes)
    load_model_weights(model, path, what=what, model_name=model_name, num_classes=num_classes)
    return model.to(device)


def first_test_images(loader, count: int) -> torch.Tensor:
    """The first ``count`` images of the test split (fewer if it is smaller), normalised as for evaluation."""
    chunks, total = [], 0
    for batch in loader:
        chunks.append(batch[0][: count - total])
        total += chunks[-1].shape[0]
        if total >= count:
            break
    return torch.cat(chunks)


def stage_features(model: torch.nn.Module, images: torch.Tensor, batch_size: int):
    """Per batch of ``images``, the model's stage features (eval mode, no gradient)."""
    for start in range(0, images.shape[0], batch_size):
        output = model(images[start : start + batch_size])
        if not isinstance(output, tuple) or len(output) != 2:
            raise ConfigError(
                "the model returns no stage features; visualize.py needs forward(x) -> (logits, stage_features)"
            )
        yield [feature.float() for feature in output[1]]


@torch.inference_mode()
def measure(model: torch.nn.Module, images: torch.Tensor, batch_size: int) -> list[StageStats]:
    """Salience over all ``images`` (first pass), then the halves it defines compared (second pass)."""
    model.eval()
    count = images.shape[0]
    salience_sums, shapes = None, None
    for feats in stage_features(model, images, batch_size):
        batch = [channel_salience(f).double().cpu() * f.shape[0] for f in feats]
        salience_sums = batch if salience_sums is None else [a + b for a, b in zip(salience_sums, batch)]
        shapes = [tuple(f.shape[1:]) for f in feats]
    salience = [total / count for total in salience_sums]
    orders = [salience_order(s) for s in salience]
    squared, cosine = [0.0] * len(shapes), [0.0] * len(shapes)
    for feats in stage_features(model, images, batch_size):
        for k, (feature, order) in enumerate(zip(feats, orders)):
            salient, redundant = salient_and_redundant(feature.double(), order.to(feature.device))
            squared[k] += (redundant - salient).pow(2).sum().item()
            cosine[k] += F.cosine_similarity(salient.flatten(1), redundant.flatten(1), dim=1).sum().item()
    return [
        StageStats(c, h, w, s, o, squared[k] / (count * (c // 2) * h * w), cosine[k] / count)
        for k, ((c, h, w), s, o) in enumerate(zip(shapes, salience, orders))
    ]


@torch.inference_mode()
def shown_maps(model: torch.nn.Module, images: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Per stage, the features of ``images`` on the CPU."""
    model.eval()
    return [torch.cat([f.cpu() for f in parts]) for parts in zip(*stage_features(model, images, batch_size))]


def shown_channels(stage: StageStats, per_side: int) -> tuple[list[int], list[int]]:
    """The ``per_side`` most salient channels and the ``per_side`` least salient, by rank (at most h each)."""
    k = min(per_side, stage.half)
    order = stage.order.tolist()
    return order[:k], order[stage.channels - k :]


# ---------------------------------------------------------------------------------------------- figures


def panel_grid(figure: Figure, panels: int):
    columns = min(panels, MAX_PANELS_PER_ROW)
    axes = figure.subplots(math.ceil(panels / columns), columns, squeeze=False).ravel()
    for unused in axes[panels:]:
        unused.set_axis_off()
    return axes[:panels]


def salience_figure(runs: list[Run], count: int) -> Figure:
    stages = len(runs[0].stages)
    columns = min(stages, MAX_PANELS_PER_ROW)
    figure = new_figure(4.2 * columns, 3.4 * math.ceil(stages / columns) + 0.5)
    for index, axis in enumerate(panel_grid(figure, stages)):
        first = runs[0].stages[index]
        ranks = range(1, first.channels + 1)
        for run, style in zip(runs, ("-", "--")):
            stage = run.stages[index]
            axis.plot(
                ranks,
                stage.salience[stage.order].tolist(),
                style,
                marker="." if stage.channels <= 64 else None,
                markersize=4,
                linewidth=1.2,
                label=run.label,
            )
        axis.axvline(
            first.half + 0.5,
            color="0.5",
            linestyle="--",
            linewidth=1,
            label=f"salient | redundant split (h = {first.half})",
        )
        axis.set_title(f"stage {index + 1}: {first.channels} channels, {first.height}x{first.width}")
        axis.set_xlabel("channel rank (1 = most salient)")
        axis.set_ylabel("salience (unitless)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    figure.suptitle(f"Channel salience per stage, sorted descending ({count} test images)")
    return figure


def similarity_figure(runs: list[Run], count: int) -> Figure:
    stages = len(runs[0].stages)
    figure = new_figure(max(8.0, 2.2 + 1.6 * stages * len(runs)), 4.2)
    positions = list(range(1, stages + 1))
    width = 0.8 / len(runs)
    mse_axis, cosine_axis = figure.subplots(1, 2)
    for number, run in enumerate(runs):
        offsets = [p + (number - (len(runs) - 1) / 2) * width for p in positions]
        for axis, values in ((mse_axis, [s.mse for s in run.stages]), (cosine_axis, [s.cosine for s in run.stages])):
            bars = axis.bar(offsets, values, width, label=run.label)
            axis.bar_label(bars, fmt="%.3g", fontsize="x-small", padding=2)
    ticks = [f"{p}\n(C = {s.channels})" for p, s in zip(positions, runs[0].stages)]
    for axis in (mse_axis, cosine_axis):
        axis.set_xticks(positions, ticks)
        axis.set_xlabel("stage")
        axis.grid(axis="y", alpha=0.3)
        axis.legend(fontsize="small")
    mse_axis.set_title("MSE, redundant half vs salient half")
    mse_axis.set_ylabel("MSE (squared activation units)")
    mse_axis.margins(y=0.15)
    cosine_axis.set_title("cosine similarity, salient half vs redundant half")
    cosine_axis.set_ylabel("cosine similarity (unitless, -1 to 1)")
    lowest = min(min(s.cosine for s in run.stages) for run in runs)
    cosine_axis.set_ylim(min(0.0, lowest - 0.1), 1.1)
    cosine_axis.axhline(0, color="0.3", linewidth=0.8)
    figure.suptitle(f"Salient vs redundant half per stage, paired as intra_fd pairs them ({count} test images)")
    return figure


def montage(images: torch.Tensor, maps: torch.Tensor, channels: list[int], tile: int, cmap, norm) -> torch.Tensor:
    """One RGB picture: a row per image, the image (contrast-stretched) then its ``channels`` maps coloured
    by ``cmap``/``norm``, every tile scaled to ``tile`` pixels (nearest), a white gap between columns."""
    pictures = images.float()
    low = pictures.amin(dim=(1, 2, 3), keepdim=True)
    pictures = (pictures - low) / (pictures.amax(dim=(1, 2, 3), keepdim=True) - low).clamp_min(1e-12)
    if pictures.shape[1] == 1:
        pictures = pictures.expand(-1, 3, -1, -1)
    coloured = torch.from_numpy(cmap(norm(maps[:, channels].numpy()))[..., :3]).float().permute(0, 1, 4, 2, 3)
    columns = [F.interpolate(pictures, size=(tile, tile), mode="nearest")]
    columns += [F.interpolate(coloured[:, index], size=(tile, tile), mode="nearest") for index in range(len(channels))]
    gap = tile // 8
    padded = [F.pad(column, (0, gap, 0, gap), value=1.0) for column in columns]  # white gaps right and below
    grid = torch.cat([torch.cat(list(row), dim=2) for row in zip(*[column.unbind(0) for column in padded])], dim=1)
    return grid[:, :-gap, :-gap].permute(1, 2, 0).clamp(0, 1)


def maps_figure(run: Run, images: torch.Tensor, per_side: int) -> Figure:
    """Per stage, one panel: a row per shown image, its input, its most salient channels, its least salient."""
    shown = [shown_channels(stage, per_side) for stage in run.stages]
    count, stages = images.shape[0], len(run.stages)
    columns = 1 + 2 * max(len(top) for top, _ in shown)
    tile = max(images.shape[-1], max(stage.height for stage in run.stages))
    figure = new_figure(0.95 * columns + 2.0, (0.95 * count + 0.9) * stages + 0.8)
    cmap = matplotlib.colormaps["viridis"]
    for index, (axis, stage, maps, (top, bottom)) in enumerate(
        zip(figure.subplots(stages, 1, squeeze=False)[:, 0], run.stages, run.maps, shown)
    ):
        channels = top + bottom
        values = maps[:, channels]
        norm = Normalize(min(0.0, values.min().item()), max(values.max().item(), 1e-12))
        axis.imshow(montage(images, maps, channels, tile, cmap, norm).numpy(), interpolation="nearest")
        rank = {channel: position + 1 for position, channel in enumerate(stage.order.tolist())}
        step = tile + tile // 8
        axis.set_xticks(
            [step * column + tile / 2 for column in range(len(channels) + 1)],
            ["input"] + [f"{'top' if n < len(top) else 'low'} #{rank[c]}\nch {c}" for n, c in enumerate(channels)],
            fontsize="small",
        )
        axis.set_yticks([step * row + tile / 2 for row in range(count)], [str(row) for row in range(count)])
        axis.set_xlabel(
            f"channel by salience rank (top = most, low = least salient); each tile "
            f"{stage.height}x{stage.width} feature-map pixels",
            fontsize="small",
        )
        axis.set_ylabel("test image")
        axis.set_title(f"stage {index + 1}: {stage.channels} channels, {stage.height}x{stage.width}", fontsize="medium")
        colorbar = figure.colorbar(ScalarMappable(norm, cmap), ax=axis, shrink=0.9)
        colorbar.set_label("activation (a.u.)", fontsize="small")
    figure.suptitle(f"{run.label}: the {(columns - 1) // 2} most and least salient channel maps per stage")
    return figure


def output_names() -> tuple[str, ...]:
    """Every file main() may write into --out."""
    return (JSON_FILE, *(f"{name}.{suffix}" for name in FIGURE_NAMES for suffix in FORMATS))


def run_record(run: Run, per_side: int) -> dict:
    stages = []
    for number, stage in enumerate(run.stages, start=1):
        top, bottom = shown_channels(stage, per_side)
        stages.append(
            {
                "stage": number,
                "channels": stage.channels,
                "height": stage.height,
                "width": stage.width,
                "half": stage.half,
                "salience_sorted": stage.salience[stage.order].tolist(),
                "salience": stage.salience.tolist(),
                "order": stage.order.tolist(),
                "mse": stage.mse,
                "cosine": stage.cosine,
                "shown_most_salient": top,
                "shown_least_salient": bottom,
            }
        )
    return {"path": str(run.path), "label": run.label, "stages": stages}


# ---------------------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_checkpoint_arguments(parser)
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="CE_CHECKPOINT",
        help="a checkpoint of the same architecture to overlay (e.g. the CE baseline)",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for the figures and features.json")
    parser.add_argument(
        "--num-images",
        type=int,
        default=256,
        help="test images the statistics are computed on, the first of the split (default 256)",
    )
    parser.add_argument("--images", type=int, default=4, help="test images shown in the channel-map grid (default 4)")
    parser.add_argument(
        "--channels",
        type=int,
        default=4,
        help="most and least salient channels shown per stage in the grid (default 4)",
    )
    parser.add_argument("--label", help="legend name of CHECKPOINT (default: its folder/file name)")
    parser.add_argument("--compare-label", help="legend name of the --compare checkpoint")
    args = parser.parse_intermixed_args(argv)

    for name, value in (("--num-images", args.num_images), ("--images", args.images), ("--channels", args.channels)):
        positive(name, value)
    if args.images > args.num_images:
        raise ConfigError(f"--images {args.images} is more than --num-images {args.num_images}")
    check_output_dir(args.out, "--out", output_names())
    if args.compare is not None and not args.compare.is_file():
        raise CheckpointError(f"--compare checkpoint not found: {args.compare}")

    trained = load_trained(args.checkpoint, args.config, checkpoint_overrides(args))
    config = trained.config
    runs = [Run("checkpoint", args.checkpoint, args.label or default_label(args.checkpoint), trained.model)]
    if args.compare is not None:
        model = load_compare(args.compare, args.checkpoint, config.model, trained.loaders.num_classes, trained.device)
        label = args.compare_label or default_label(args.compare)
        runs.append(Run("compare", args.compare, label if label != runs[0].label else f"{label} (compare)", model))

    images = first_test_images(trained.loaders.test, args.num_images)
    count, shown = images.shape[0], images[: args.images]
    for run in runs:
        run.stages = measure(run.model, images, config.train.eval_batch_size)
        run.maps = shown_maps(run.model, shown, config.train.eval_batch_size)
    figures = {"salience": salience_figure(runs, count), "similarity": similarity_figure(runs, count)}
    for run in runs:
        figures["maps" if run.role == "checkpoint" else "maps_compare"] = maps_figure(run, shown.cpu(), args.channels)

    record = {
        "model": config.model.name,
        "dataset": config.data.name,
        "split": "test",
        "images": count,
        "image_indices": [0, count],
        "shown_images": shown.shape[0],
        "mode": "eval, no gradient",
        "definitions": DEFINITIONS,
        "checkpoint": run_record(runs[0], args.channels),
        "compare": run_record(runs[1], args.channels) if len(runs) > 1 else None,
    }
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        record["figures"] = {name: save(figure, args.out, name) for name, figure in figures.items()}
        (args.out / JSON_FILE).write_text(json.dumps(record, indent=1) + "\n")
    except OSError as error:
        raise RunDirError(f"cannot write into --out {args.out}: {error.strerror or error}") from None
    print(f"{len(figures)} figures ({', '.join(FORMATS)}) and {JSON_FILE} in {args.out}, from {count} test images")
    return 0


if __name__ == "__main__":
    exit_with(main)
