"""The data of the --plots figures, gathered from the rows (results/figures.py draws them): per dataset and
model, each row's test top-1 over epochs; each sweep's last- and best-epoch top-1 as a heatmap; our best-epoch
top-1 beside the published numbers, as bars (the Tf-FD paper's table, and each self-KD table)."""

from __future__ import annotations

from results.aggregate import Row, stat_of, varying_settings
from results.compare import like_for_like, published_for
from results.figures import Bar, Bars, Curve, Curves, Heatmap, seed_band
from results.methods import METHODS
from results.numbers import ACC1, Stat, describe, fmt_value
from results.selfkd_tables import selfkd_contexts, selfkd_pairs
from results.sweeps import grid_cell, sweeps


def row_label(rows: list[Row], row: Row) -> str:
    settings = describe(varying_settings(rows, row))
    return row.method + (f" ({settings})" if settings else "")


def curve_figures(rows: list[Row]) -> list[Curves]:
    """Per dataset and model, each row's test top-1 over epochs (from metrics.json's history)."""
    models: dict[tuple, list[Curve]] = {}
    for row in rows:
        histories = [run.metrics["history"] for run in row.runs if run.metrics and run.metrics.get("history")]
        curve = seed_band(row_label(rows, row), histories)
        if curve is not None:
            models.setdefault((row.dataset, row.model), []).append(curve)
    return [
        Curves(f"curves_{dataset}_{model}", f"{model} on {dataset}: test top-1 over epochs", curves)
        for (dataset, model), curves in models.items()
    ]


def sweep_heatmaps(rows: list[Row]) -> list[Heatmap]:
    """Each sweep's last- and best-epoch top-1, the last axis across, the others down."""
    heatmaps = []
    for sweep in sweeps(rows):
        down, across = sweep.axes[:-1], sweep.axes[-1]
        cells = {
            which: [
                [_heatmap_cell(sweep.cells.get((*combo, value)), which) for value in sweep.values[across]]
                for combo in sweep.down()
            ]
            for which in ("last", "best")
        }
        if all(stat.mean is None for grid in cells.values() for line in grid for stat in line):
            continue
        yticks = [", ".join(fmt_value(v) for v in combo) for combo in sweep.down()] if down else [sweep.family[2]]
        heatmaps.append(
            Heatmap(
                "sweep_" + "_".join(filter(None, sweep.family)),
                f"{sweep.title}: test top-1 (%) per setting",
                across,
                " / ".join(down) or "method",
                [fmt_value(value) for value in sweep.values[across]],
                yticks,
                cells,
            )
        )
    return heatmaps


def _heatmap_cell(row: Row | None, which: str) -> Stat:
    cell = grid_cell(row, which, ACC1)  # with its note on unfinished seeds
    return cell if isinstance(cell, Stat) else Stat(None)


def bar_figures(rows: list[Row]) -> tuple[list[Bars], list[str]]:
    """Our best-epoch top-1 beside the published numbers: the Tf-FD paper's table (model x method) and each
    self-KD table (method x {alone, + Tf-FD}); and the rows left out (a sweep's, which has no one row)."""
    figures = []
    paper_rows = [row for row in rows if row.selfkd is None and row.paper is not None]
    family_size = {
        family: sum(1 for row in paper_rows if row.family == family and row.runs)
        for family in {row.family for row in paper_rows}
    }
    left_out = list(dict.fromkeys(f"{row.model} {row.method}" for row in paper_rows if family_size[row.family] > 1))
    bars: dict[tuple, Bar] = {}
    for row in paper_rows:
        if family_size[row.family] == 1 and row.stat("best", ACC1).mean is not None:
            bars[(row.model, row.method)] = Bar(row.stat("best", ACC1), row.paper)
    if bars:  # the paper's numbers are CIFAR-100's
        models = list(dict.fromkeys(model for model, _ in bars))
        figures.append(
            Bars(
                "paper_bars_cifar100",
                "cifar100: best-epoch test top-1 beside the Tf-FD paper's table",
                "model",
                models,
                list(METHODS),
                bars,
                "Tf-FD paper",
            )
        )
    contexts = selfkd_contexts([row for row in rows if row.selfkd is not None])
    for context in contexts:
        bars, groups = {}, []
        for name, settings, alone, with_tffd in selfkd_pairs(context.rows):
            group = name + (f"\n{settings}" if settings else "")
            groups.append(group)
            like = like_for_like(alone) if alone else None
            others = [
                number.top1
                for number in published_for(name, context.dataset, False, context.model)
                if number is not like
            ]
            bars[(group, "alone")] = Bar(stat_of(alone, "best"), like.top1 if like else None, others)
            bars[(group, "+ Tf-FD")] = Bar(stat_of(with_tffd, "best"))
        if any(bar.paper is not None or bar.others for bar in bars.values()):
            same = [c for c in contexts if (c.dataset, c.model) == (context.dataset, context.model)]
            suffix = f"_{same.index(context) + 1}" if len(same) > 1 else ""
            figures.append(
                Bars(
                    f"selfkd_bars_{context.dataset}_{context.model}{suffix}",
                    f"{context.title}: best-epoch test top-1 beside the published numbers",
                    "method",
                    groups,
                    ["alone", "+ Tf-FD"],
                    bars,
                    "published, like-for-like",
                )
            )
    return figures, left_out
