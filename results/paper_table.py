"""The Tf-FD paper's table: a row per dataset, model, method, teacher and settings, its last- and best-epoch
top-1 beside the paper's number (WRN-40-1's: the KD benchmark's) and our difference from it, the IJCNN
version's numbers of the same cell (each with a note naming its source, † where the row does not follow its
protocol), the protocol the runs were trained under and how many seeds finished."""

from __future__ import annotations

from results.aggregate import Row, varying_settings
from results.compare import follows
from results.numbers import ACC1, MAX, NONE, Metric, Stat, describe, difference
from results.published import ijcnn_published, paper_source, references
from results.tables import Table

IJCNN_COLUMN = "IJCNN version top-1 [note]"


def ijcnn_cell(row: Row, notes: dict) -> str:
    """The IJCNN version's numbers of the row's cell with their notes (``notes``: source -> index, filled in
    order); † where the row's runs do not follow that number's protocol (none marked on a row without runs)."""
    cells = []
    for number in ijcnn_published(row.dataset, row.model, row.method, row.teacher):
        index = notes.setdefault(number.source, len(notes) + 1)
        unlike = row.runs and not follows(number, row.dataset, row.model, row.settings)
        cells.append(f"{number.top1:.2f} [{index}]" + ("†" if unlike else ""))
    return "; ".join(cells) or NONE


def paper_references(dataset: str, model: str, notes: dict) -> str:
    """A note line on the published numbers of ``model`` that no config here runs, or ""."""
    items = [
        f"{reference.label} {reference.number.top1:.2f}"
        + (f" (CE {reference.number.baseline:.2f})" if reference.number.baseline is not None else "")
        + f" [{notes.setdefault(reference.number.source, len(notes) + 1)}]"
        for reference in references(dataset, model)
    ]
    return f"Published for {model} on {dataset} with no config here (references): {'; '.join(items)}." if items else ""


def results_table(rows: list[Row], metrics: tuple[Metric, ...]) -> Table:
    columns = [
        ("dataset", None),
        ("model", None),
        ("method", None),
        ("teacher (top-1)", None),
        ("protocol", None),
        ("settings", None),
        ("last-epoch top-1", MAX),
        ("best-epoch top-1", MAX),
        ("paper", None),
        ("Δ last", None),
        ("Δ best", None),
        (IJCNN_COLUMN, None),
        *((f"{which}-epoch {metric.header}", metric.better) for metric in metrics for which in ("last", "best")),
        ("runs", None),
    ]
    lines, notes = [], {}
    for row in rows:
        last, best = row.stat("last", ACC1), row.stat("best", ACC1)
        teacher = row.teacher or ""
        if row.teacher and row.teacher_acc1() is not None:
            teacher += f" ({row.teacher_acc1():.2f})"
        protocol = f"{row.trained_under()}: {row.protocol()}" if row.settings else ""
        lines.append(
            [
                row.dataset,
                row.model,
                row.method,
                teacher,
                protocol,
                describe(varying_settings(rows, row)),
                last,
                best,
                Stat(row.paper),
                Stat(difference(last.mean, row.paper), signed=True),
                Stat(difference(best.mean, row.paper), signed=True),
                ijcnn_cell(row, notes),
                *(row.stat(which, metric) for metric in metrics for which in ("last", "best")),
                row.status(),
            ]
        )
    table = Table([header for header, _ in columns], lines, [better for _, better in columns])
    reference_lines = [
        paper_references(dataset, model, notes)
        for dataset, model in dict.fromkeys((row.dataset, row.model) for row in rows)
    ]
    table.after += [
        f"paper: {source}."
        for source in dict.fromkeys(paper_source(row.model) for row in rows if row.paper is not None)
    ]
    table.after += [*filter(None, reference_lines), *(f"[{index}] {source}." for source, index in notes.items())]
    column = table.header.index(IJCNN_COLUMN)
    if any("†" in line[column] for line in lines):
        table.after.append("† Not like-for-like: the row's runs do not follow that number's protocol (in its note).")
    if all(line[column] == NONE for line in lines):
        table.drop(column)
    if len({row.dataset for row in rows}) == 1:  # named in the caption instead
        table.drop(0)
    return table
