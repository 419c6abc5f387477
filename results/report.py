"""The report: the rows as sections of tables with their captions (the Tf-FD paper's table, the
self-distillation tables and the sweeps, each with the definitions of the metrics shown), and the whole report
in one of the formats (text, markdown, csv, latex)."""

from __future__ import annotations

from results.aggregate import Row
from results.numbers import Metric
from results.paper_table import results_table
from results.render_csv import csv_text
from results.render_latex import render_latex
from results.render_text import render_text
from results.selfkd_tables import selfkd_tables
from results.sweeps import sweep_grids
from results.tables import Section

FORMATS = ("text", "markdown", "csv", "latex")


def metric_notes(metrics: tuple[Metric, ...]) -> str:
    if not metrics:
        return ""
    return (
        " " + "; ".join(f"{metric.name}: {metric.definition}" for metric in metrics) + "; lower is better. "
        "Their best-epoch numbers are those of the best-top-1 epoch; – where a run did not record them "
        "(runs from before they were recorded)."
    )


def report(rows: list[Row], metrics: tuple[Metric, ...] = ()) -> list[Section]:
    """The tables as sections (a heading, paragraphs and tables) that report_text() writes in any format."""
    paper_rows = [row for row in rows if row.selfkd is None]
    selfkd_rows = [row for row in rows if row.selfkd is not None]
    sections = []
    if paper_rows:
        datasets = sorted({row.dataset for row in paper_rows})
        caption = (
            f"{' / '.join(datasets)} test top-1 accuracy (%), mean ± sample std over the finished seeds. "
            "last-epoch: after the final epoch; best-epoch: the best of all epochs (chosen on the test split). "
            "Δ: ours minus the paper's number (the paper does not say which of the two it reports). "
            "protocol: the one the runs were trained under, recognised from their resolved config "
            "(configs/_base_/protocols/): paper (CRD), the one the paper's numbers come from (the CRD "
            "benchmark's training, λ_inter 5e-3, λ_intra 4e-4); released code, the released Tf-FD code's "
            "defaults (README λ: its README's ResNet-20 command's 5e-4, 8e-4); neither, with the keys that "
            "depart from the closest; shortened: fewer epochs than the protocol's."
        )
        sections.append(Section("", [caption + metric_notes(metrics)], [results_table(paper_rows, metrics)]))
    if selfkd_rows:
        intro = (
            "Test top-1 accuracy (%), mean ± sample std over the finished seeds (unfinished seeds are counted in "
            "the runs columns, never averaged). last-epoch: after the final epoch; best-epoch: the best of all "
            "epochs (chosen on the test split). The CE row's + Tf-FD cells are Tf-FD alone. Published numbers "
            "are shown beside the row of their method, alone or + Tf-FD (only Tf-FD's IJCNN version combines "
            "Tf-FD with other methods: label smoothing, Cutout, AutoAugment), each with a note naming its source, "
            "backbone and protocol; † marks a number that is not like-for-like with the runs. Self-KD-Lib's "
            "table is for PreAct ResNet-18: like-for-like only beside preact_resnet18 runs under its protocol "
            "(scripts/reproduce_selfkd.sh --model preact_resnet18), another backbone beside cifar_resnet18 runs."
        )
        sections.append(
            Section(
                "Self-distillation: method × {alone, + Tf-FD}",
                [intro + metric_notes(metrics)],
                selfkd_tables(selfkd_rows, metrics),
            )
        )
    grids = sweep_grids(rows, metrics)
    if grids:
        sections.append(Section("Sweeps", [], grids))
    return sections


def report_text(rows: list[Row], metrics: tuple[Metric, ...], fmt: str) -> str:
    """The whole report in ``fmt`` (one of FORMATS), as written to stdout or a file: csv every row as one flat
    table, the others the sections rendered."""
    if fmt == "csv":
        return csv_text(rows, metrics)
    sections = report(rows, metrics)
    return (render_latex(sections) if fmt == "latex" else render_text(sections, fmt)) + "\n"
