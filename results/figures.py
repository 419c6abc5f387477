"""The figures of ``scripts/collect_results.py --plots DIR``, drawn headless (Agg), each as PNG and PDF.

  curves_<dataset>_<model>         per row of that model (a method and its settings), test top-1 over the
                                   epochs: the mean over the seeds that reached each epoch, a min-max band
  sweep_<dataset>_<model>_<method>[_<teacher>]
                                   a sweep's rows (e.g. lambda_intra x lambda_inter): the last- and best-epoch
                                   mean top-1 over the finished seeds, one annotated cell per setting
  paper_bars_cifar100              the Tf-FD paper's table: best-epoch top-1 per model (groups) and method (bars),
                                   mean ± std over the finished seeds, the paper's number marked in black
  selfkd_bars_<dataset>_<model>[_<n>]
                                   a self-KD table: per method, alone and + Tf-FD, the like-for-like published
                                   number of the method alone in black, the others (another backbone or
                                   protocol) dashed grey

results/figure_data.py gathers the numbers (the tables' rows); this module only draws them. A figure without
data is not written. Every figure has a fixed size in inches (below) at DPI; scripts/visualize.py draws and
saves its figures with the same new_figure() and save().
"""

from __future__ import annotations

import math
import re
import statistics
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from core.errors import RunDirError
from engine.output_paths import check_output_dir

DPI = 100
FORMATS = ("png", "pdf")
CURVES_SIZE = (7.0, 4.4)
HEATMAP_SIZE = (11.0, 4.6)
BARS_HEIGHT = 4.6
MISSING_COLOR = "0.85"


def new_figure(width: float, height: float) -> Figure:
    """A figure of exactly width x height inches at DPI, rendered by Agg (no display needed)."""
    figure = Figure(figsize=(round(width, 2), round(height, 2)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save(figure: Figure, out: Path, name: str) -> dict:
    """Write ``figure`` as out/name.png and .pdf; the file names, size and resolution written."""
    for suffix in FORMATS:
        # No creation date in the PDF: the same inputs give the same file.
        figure.savefig(out / f"{name}.{suffix}", dpi=DPI, metadata={"CreationDate": None} if suffix == "pdf" else None)
    width, height = figure.get_size_inches()
    return {
        **{suffix: f"{name}.{suffix}" for suffix in FORMATS},
        "figsize_inches": [float(width), float(height)],
        "dpi": DPI,
        "pixels": [round(width * DPI), round(height * DPI)],
    }


def bars_size(groups: int) -> tuple[float, float]:
    return max(6.4, 3.2 + 0.9 * groups), BARS_HEIGHT


def title(figure: Figure, text: str) -> str:
    """``text`` broken into lines that fit the figure's width at the title's size."""
    return textwrap.fill(text, width=int(figure.get_size_inches()[0] * 10), break_on_hyphens=False)


# ---------------------------------------------------------------------------------------------- the data
@dataclass
class Curve:
    label: str
    epochs: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]
    seeds: int


def seed_band(label: str, histories: list[list[dict]]) -> Curve | None:
    """The mean, min and max test top-1 per epoch over the seeds' metrics.json histories (each epoch over
    the seeds that reached it); None when no history has one."""
    by_epoch: dict[int, list[float]] = {}
    for history in histories:
        for record in history:
            if record.get("epoch") is not None and record.get("test_acc1") is not None:
                by_epoch.setdefault(int(record["epoch"]), []).append(float(record["test_acc1"]))
    if not by_epoch:
        return None
    epochs = sorted(by_epoch)
    return Curve(
        label,
        epochs,
        [statistics.fmean(by_epoch[e]) for e in epochs],
        [min(by_epoch[e]) for e in epochs],
        [max(by_epoch[e]) for e in epochs],
        len(histories),
    )


@dataclass
class Curves:
    name: str
    title: str
    curves: list[Curve]


@dataclass
class Heatmap:
    """``cells["last"|"best"][down][across]``: numbers with ``mean``, ``std`` and ``note`` (mean None: no
    finished run)."""

    name: str
    title: str
    xlabel: str
    ylabel: str
    xticks: list[str]
    yticks: list[str]
    cells: dict[str, list[list]]


@dataclass
class Bar:
    stat: object  # our number: ``mean`` (None: no finished run) and ``std``
    paper: float | None = None  # the published number it is compared with, marked in black
    others: list[float] = field(default_factory=list)  # published numbers that are not like-for-like


@dataclass
class Bars:
    name: str
    title: str
    xlabel: str
    groups: list[str]
    series: list[str]  # the bars of a group, in order (each its colour)
    bars: dict[tuple[str, str], Bar]  # (group, series) -> bar; absent: no bar there
    paper_label: str


# ---------------------------------------------------------------------------------------------- drawing
def draw_curves(spec: Curves) -> Figure:
    figure = new_figure(*CURVES_SIZE)
    axis = figure.subplots()
    for index, curve in enumerate(spec.curves):
        color = f"C{index % 10}"
        seeds = f"{curve.seeds} seed{'s' if curve.seeds > 1 else ''}"
        axis.plot(
            curve.epochs,
            curve.mean,
            color=color,
            marker="o" if len(curve.epochs) <= 20 else None,
            markersize=3,
            label=f"{curve.label} ({seeds})",
        )
        axis.fill_between(curve.epochs, curve.low, curve.high, color=color, alpha=0.2, linewidth=0)
    handles, _ = axis.get_legend_handles_labels()
    handles.append(Patch(color="0.5", alpha=0.3, label="min–max over seeds"))
    figure.legend(handles=handles, fontsize="x-small", loc="outside lower center", ncols=1 if len(handles) < 4 else 2)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("epoch")
    axis.set_ylabel("test top-1 (%)")
    figure.suptitle(title(figure, f"{spec.title}, mean over seeds"), fontsize="medium")
    axis.grid(alpha=0.3)
    return figure


def draw_heatmap(spec: Heatmap) -> Figure:
    figure = new_figure(*HEATMAP_SIZE)
    values = [stat.mean for grid in spec.cells.values() for line in grid for stat in line if stat.mean is not None]
    low, high = min(values), max(values)
    norm = Normalize(low - 0.5, high + 0.5) if high - low < 1e-9 else Normalize(low, high)
    cmap = colormaps["viridis"].with_extremes(bad=MISSING_COLOR)
    axes = figure.subplots(1, len(spec.cells), squeeze=False).ravel()
    for axis, (which, grid) in zip(axes, spec.cells.items()):
        means = [[math.nan if stat.mean is None else stat.mean for stat in line] for line in grid]
        axis.imshow(means, cmap=cmap, norm=norm, aspect="auto")
        for row, line in enumerate(grid):
            for column, stat in enumerate(line):
                text = (
                    "–"
                    if stat.mean is None
                    else "\n".join(
                        filter(
                            None,
                            [
                                f"{stat.mean:.2f}",
                                f"± {stat.std:.2f}" if stat.std is not None else "",
                                stat.note.strip(),
                            ],
                        )
                    )
                )
                dark = stat.mean is not None and norm(stat.mean) < 0.5
                axis.text(
                    column, row, text, ha="center", va="center", fontsize="small", color="white" if dark else "black"
                )
        axis.set_xticks(range(len(spec.xticks)), spec.xticks)
        axis.set_yticks(range(len(spec.yticks)), spec.yticks)
        axis.set_xlabel(spec.xlabel)
        axis.set_ylabel(spec.ylabel)
        axis.set_title(f"{which}-epoch test top-1 (%)", fontsize="medium")
    colorbar = figure.colorbar(ScalarMappable(norm, cmap), ax=list(axes), shrink=0.9)
    colorbar.set_label("test top-1 (%), mean over the finished seeds")
    if any(stat.mean is None for grid in spec.cells.values() for line in grid for stat in line):
        figure.legend(
            handles=[Patch(color=MISSING_COLOR, label="no finished run")], fontsize="x-small", loc="outside lower right"
        )
    figure.suptitle(title(figure, spec.title))
    return figure


def draw_bars(spec: Bars) -> Figure:
    figure = new_figure(*bars_size(len(spec.groups)))
    axis = figure.subplots()
    width = 0.8 / len(spec.series)
    shown = []
    for index, group in enumerate(spec.groups):
        present = [series for series in spec.series if (group, series) in spec.bars]
        for place, series in enumerate(present):
            x = index + (place - (len(present) - 1) / 2) * width
            bar = spec.bars[(group, series)]
            if bar.stat.mean is not None:
                axis.bar(
                    x,
                    bar.stat.mean,
                    width * 0.9,
                    color=f"C{spec.series.index(series)}",
                    label=series,
                    yerr=bar.stat.std,
                    capsize=3 if bar.stat.std is not None else 0,
                )
                shown += [bar.stat.mean, bar.stat.mean + (bar.stat.std or 0)]
            for other in bar.others:
                axis.hlines(
                    other,
                    x - width / 2,
                    x + width / 2,
                    colors="0.45",
                    linestyles="--",
                    linewidth=1.5,
                    label="published, not like-for-like (†)",
                )
            if bar.paper is not None:
                axis.hlines(
                    bar.paper, x - width / 2, x + width / 2, colors="black", linewidth=2.5, label=spec.paper_label
                )
            shown += [bar.paper] if bar.paper is not None else []
            shown += bar.others
    handles, names = axis.get_legend_handles_labels()
    labels = dict(zip(names, handles))  # one entry per label
    order = [label for label in spec.series if label in labels]
    order += [label for label in labels if label not in spec.series]
    figure.legend(
        [labels[label] for label in order], order, fontsize="x-small", loc="outside lower center", ncols=len(order)
    )
    axis.set_xticks(range(len(spec.groups)), spec.groups, fontsize="small")
    if shown:
        axis.set_ylim(max(0.0, min(shown) - 4), min(100.0, max(shown) + 1.5))
    axis.set_xlabel(spec.xlabel)
    axis.set_ylabel("best-epoch test top-1 (%)")
    figure.suptitle(title(figure, f"{spec.title}; bars: mean ± std over the finished seeds"), fontsize="medium")
    axis.grid(axis="y", alpha=0.3)
    return figure


def file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", name)


def write_figures(out: Path, curves: list[Curves], heatmaps: list[Heatmap], bars: list[Bars]) -> dict[str, dict]:
    """Draw every figure that has data into ``out`` (made if need be); {file name: what save() records}."""
    figures = [(spec.name, draw_curves(spec)) for spec in curves if spec.curves]
    figures += [(spec.name, draw_heatmap(spec)) for spec in heatmaps]
    figures += [
        (spec.name, draw_bars(spec)) for spec in bars if any(bar.stat.mean is not None for bar in spec.bars.values())
    ]
    if not figures:
        return {}
    check_output_dir(out, "--plots", tuple(f"{file_name(name)}.{suffix}" for name, _ in figures for suffix in FORMATS))
    try:
        out.mkdir(parents=True, exist_ok=True)
        return {file_name(name): save(figure, out, file_name(name)) for name, figure in figures}
    except OSError as error:
        raise RunDirError(f"cannot write into --plots {out}: {error.strerror or error}") from None
