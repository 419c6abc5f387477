"""Turn run directories into tables beside the paper's numbers (text, Markdown, CSV or LaTeX) and figures.

    python scripts/collect_results.py [ROOT ...] [--format text|markdown|csv|latex] [--out FILE]
                                      [--metrics acc1,ece,nll,aurc] [--plots DIR]   (default ROOT: runs/cifar100)

Every directory under the roots that holds a config.yaml is a run. Runs whose resolved configs differ only in
the seed (and in paths or logging settings) form one row: mean ± sample std over the finished seeds of the
last-epoch and the best-epoch test top-1, beside the paper's number and our difference from it, the IJCNN
version of Tf-FD's numbers of the same cell, and the protocol the runs were trained under (the Tf-FD paper's,
the released code's, or neither). Unfinished seeds are counted and marked, never averaged; published cells
without runs are listed as missing. Rows of one model and method that differ in other keys (a sweep) are also
shown as a grid over those keys, e.g. lambda_intra x lambda_inter.

Self-distillation runs (scripts/reproduce_selfkd.sh) are shown apart, as a method x {alone, + Tf-FD} table
per model and protocol, beside the published numbers of each method, each with a note naming its source,
backbone and protocol and saying whether it is like-for-like with the runs.

Formats: text (the default: compact Markdown pipe tables with headings and notes); markdown (aligned
columns); csv (every row as one flat table, unrounded); latex (booktabs, the best entry of each number column
in bold). To stdout, or atomically to --out FILE (checked before anything is read); --csv FILE, the older
spelling, writes the CSV to FILE besides. --metrics adds last- and best-epoch columns of ECE (%), NLL (nats)
and AURC (x 10^3). --plots DIR also draws the figures (PNG and PDF).

The work is done by the results package (results/: runs, methods, protocols, published numbers, tables,
renderers, figures); this is its command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.errors import RunDirError
from engine.checkpoint import atomic_write
from engine.cli import exit_with
from engine.output_paths import check_output_dir, check_output_file, kind_of
from engine.run_dir import CONFIG_FILE
from results import figures
from results.aggregate import collect_rows
from results.figure_data import bar_figures, curve_figures, sweep_heatmaps
from results.numbers import ACC1, METRICS, parse_metrics
from results.render_csv import csv_text
from results.report import FORMATS, report_text
from results.runs import find_runs


def write_file(path: Path, text: str, flag: str) -> None:
    try:
        atomic_write(path, lambda out: out.write(text.encode()))
    except OSError as error:
        raise RunDirError(f"cannot write {flag} {path}: {error.strerror or error}") from None


def check_roots(roots: list[Path]) -> None:
    for root in roots:  # a dangling symlink or a loop is named by kind_of
        kind = kind_of(root, f"ROOT {root}")
        if kind != "dir":
            raise RunDirError(
                f"no such directory: {root}"
                if kind is None
                else f"ROOT {root} is a file, not a directory; name a directory of run directories"
            )


def write_plots(out: Path, rows: list) -> None:
    bars, left_out = bar_figures(rows)
    written = figures.write_figures(out, curve_figures(rows), sweep_heatmaps(rows), bars)
    names = ", ".join(written) or "none (no run has the data for any)"
    print(f"figures ({', '.join(figures.FORMATS)}) in {out}: {names}", file=sys.stderr)
    if left_out:
        print(f"not in the bars (several configs, see the sweep heatmaps): {', '.join(left_out)}", file=sys.stderr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", nargs="*", default=["runs/cifar100"], help="directories to search for runs")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="text",
        help="text (default: Markdown-style pipe tables), markdown (aligned), csv (every row, "
        "unrounded) or latex (booktabs; the best entry of each column in bold)",
    )
    parser.add_argument("--out", type=Path, metavar="FILE", help="write the table to FILE instead of stdout")
    parser.add_argument(
        "--metrics",
        default=ACC1.key,
        metavar="LIST",
        help=f"numbers shown besides top-1, last- and best-epoch each: a list of {', '.join(METRICS)} "
        "(default acc1: top-1 only)",
    )
    parser.add_argument(
        "--plots",
        type=Path,
        metavar="DIR",
        help="also draw the figures (PNG and PDF) into DIR: curves, sweep heatmaps, bars beside the published numbers",
    )
    parser.add_argument("--csv", type=Path, metavar="FILE", help="also write --format csv to FILE (older spelling)")
    args = parser.parse_args(argv)
    metrics = parse_metrics(args.metrics)
    for flag, path in (("--out", args.out), ("--csv", args.csv)):
        if path is not None:
            check_output_file(path, flag)
    if args.plots is not None:
        check_output_dir(args.plots, "--plots")
    roots = [Path(root) for root in args.roots]
    check_roots(roots)
    found = find_runs(roots)
    if not found:
        print(f"error: no run directories (with a {CONFIG_FILE}) under {', '.join(map(str, roots))}", file=sys.stderr)
        return 2
    rows = collect_rows(found)
    text = report_text(rows, metrics, args.format)
    if args.out is None:
        sys.stdout.write(text)
    else:
        write_file(args.out, text, "--out")
        print(f"{args.format}: {args.out}", file=sys.stderr)
    if args.csv is not None:
        write_file(args.csv, csv_text(rows, metrics), "--csv")
        print(f"CSV: {args.csv}", file=sys.stderr)
    if args.plots is not None:
        write_plots(args.plots, rows)
    return 0


if __name__ == "__main__":
    exit_with(main)
