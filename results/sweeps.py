"""Sweeps: the rows of one family (dataset, model, method, teacher) that differ in other keys, shown as a grid
over those keys (e.g. lambda_intra x lambda_inter): one varying key down with last- and best-epoch across, or a
grid per number shown with the last varying key across and the others down."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from results.aggregate import Row, varying_keys
from results.numbers import ACC1, Metric, Stat, fmt_value
from results.tables import Table


@dataclass
class Sweep:
    """The rows of one family (dataset, model, method, teacher) that differ in other keys: a grid over those."""

    family: tuple
    title: str  # "resnet32 Tf-FD on cifar100"
    axes: list[str]  # the keys that differ, in schema order; the last one goes across
    values: dict[str, list]  # each axis' values, sorted
    cells: dict[tuple, Row]  # axis values (in the order of axes) -> row

    def down(self) -> list[tuple]:
        """The combinations of all axes but the last that some row has, in order (one empty tuple for a single
        axis): rows that differ in several keys at once, such as the two protocols, are not a full grid."""
        present = {combo[:-1] for combo in self.cells}
        return [combo for combo in itertools.product(*(self.values[key] for key in self.axes[:-1])) if combo in present]


def sweeps(rows: list[Row]) -> list[Sweep]:
    families: dict[tuple, list[Row]] = {}
    for row in rows:
        if row.runs:
            families.setdefault(row.family, []).append(row)
    out = []
    for family, members in families.items():
        axes = varying_keys(members)
        if len(members) < 2 or not axes:
            continue
        dataset, model, method, teacher = family
        title = f"{model} {method}" + (f" (teacher {teacher})" if teacher else "") + f" on {dataset}"
        values = {key: _sorted_values({m.settings.get(key) for m in members}) for key in axes}
        cells = {tuple(m.settings.get(key) for key in axes): m for m in members}
        out.append(Sweep(family, title, axes, values, cells))
    return out


def sweep_grids(rows: list[Row], metrics: tuple[Metric, ...]) -> list[Table]:
    """A table per sweep. One varying key: its values down, last- and best-epoch across. More: a grid per
    number shown, the last varying key across and the others down."""
    grids = []
    for sweep in sweeps(rows):
        shown = (ACC1, *metrics)
        if len(sweep.axes) == 1:
            columns = [
                (sweep.axes[0], None),
                *((f"{which}-epoch {metric.header}", metric.better) for metric in shown for which in ("last", "best")),
            ]
            lines = [
                [
                    fmt_value(value),
                    *(
                        grid_cell(sweep.cells.get((value,)), which, metric)
                        for metric in shown
                        for which in ("last", "best")
                    ),
                ]
                for value in sweep.values[sweep.axes[0]]
            ]
            title = f"{sweep.title}: " + ", ".join(metric.title for metric in shown)
            grids.append(Table([header for header, _ in columns], lines, [better for _, better in columns], title))
            continue
        down, across = sweep.axes[:-1], sweep.axes[-1]
        for metric in shown:
            for which in ("last", "best"):
                header = [" / ".join(down), *(f"{across}={fmt_value(v)}" for v in sweep.values[across])]
                lines = [
                    [
                        ", ".join(fmt_value(v) for v in combo),
                        *(grid_cell(sweep.cells.get((*combo, value)), which, metric) for value in sweep.values[across]),
                    ]
                    for combo in sweep.down()
                ]
                grids.append(
                    Table(
                        header,
                        lines,
                        [None] + [metric.better] * (len(header) - 1),
                        f"{sweep.title}: {which}-epoch {metric.title}",
                    )
                )
    return grids


def _sorted_values(values: set) -> list:
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return sorted(values)
    return sorted(values, key=str)


def grid_cell(row: Row | None, which: str, metric: Metric) -> Stat | str:
    if row is None:
        return "–"
    done = sum(run.finished for run in row.runs)
    if not done:
        return f"unfinished (0/{len(row.runs)})"
    stat = row.stat(which, metric)
    if done < len(row.runs) and stat.mean is not None:
        stat = replace(stat, note=f" ({done}/{len(row.runs)} finished)")
    return stat
