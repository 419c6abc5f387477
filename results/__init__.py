"""Collecting results: run directories into tables beside the published numbers, and figures
(scripts/collect_results.py is its command line).

    runs.py           finding and reading runs (config.yaml + metrics.json)
    methods.py        recognising a run's method, of the Tf-FD paper's table or a self-KD table
    protocols.py      which protocol runs were trained under (configs/_base_/protocols/, the self-KD schedules)
    sources.py        where each published number is printed
    published.py      the published numbers: the Tf-FD paper's, its IJCNN version's, the self-KD literature's
    compare.py        which published numbers a row is compared with, and whether like-for-like
    numbers.py        the metrics, a mean ± std cell, how values and settings are written
    aggregate.py      runs into rows (over seeds), the missing published cells, the table order
    tables.py         a table in no particular format, and sections of tables
    paper_table.py    the Tf-FD paper's table
    selfkd_tables.py  the method x {alone, + Tf-FD} tables
    sweeps.py         the grids of rows that differ in a few keys
    report.py         the sections of a report, and the report in a format
    render_text.py    text and Markdown;  render_latex.py  LaTeX;  render_csv.py  CSV
    figure_data.py    the figures' data, from the rows;  figures.py  drawing and writing them (PNG, PDF)

The package reads core/, engine/, data/ and losses/; only scripts and tests import it.
"""
