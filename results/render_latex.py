"""The tables as LaTeX: a table environment per table (booktabs), captioned with its title and paragraphs, the
notes below it in small type, mean ± std as $a \\pm b$ and the best entry of each number column in bold (the
highest top-1, the lowest ECE/NLL/AURC; ties all bold); the sections' own text as comments."""

from __future__ import annotations

from tabulate import DataRow, Line, TableFormat, tabulate

from results.numbers import Stat
from results.tables import Section, Table

LATEX_TEXT = {
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
    "<": r"$<$",
    ">": r"$>$",
    "±": r"$\pm$",
    "–": "--",
    "−": "$-$",
    "Δ": r"$\Delta$",
    "×": r"$\times$",
    "†": r"\textsuperscript{\dag}",
    "³": r"\textsuperscript{3}",
    "λ": r"$\lambda$",
}


def latex_escape(text: str) -> str:
    return "".join(LATEX_TEXT.get(char, char) for char in text)


def _begin_tabular(widths: list[int], aligns: list[str]) -> str:
    return "\\begin{tabular}{" + "".join("r" if align == "right" else "l" for align in aligns) + "}\n\\toprule"


# tabulate's latex_booktabs, less its escaping: the cells come escaped, with their math.
LATEX_BOOKTABS = TableFormat(
    lineabove=_begin_tabular,
    linebelowheader=Line("\\midrule", "", "", ""),
    linebetweenrows=None,
    linebelow=Line("\\bottomrule\n\\end{tabular}", "", "", ""),
    headerrow=DataRow("", "&", "\\\\"),
    datarow=DataRow("", "&", "\\\\"),
    padding=1,
    with_header_hide=None,
)


def _latex_cell(cell, bold: bool) -> str:
    if not isinstance(cell, Stat):
        return latex_escape(cell)
    if cell.mean is None:
        return "--"
    number = cell.number(r" \pm ")
    return "$" + (rf"\mathbf{{{number}}}" if bold else number) + "$" + latex_escape(cell.note)


def latex_table(table: Table, caption: str) -> str:
    best = table.best_cells()
    lines = [
        [_latex_cell(cell, (index, column) in best) for column, cell in enumerate(line)]
        for index, line in enumerate(table.lines)
    ]
    body = tabulate(
        lines,
        [latex_escape(header) for header in table.header],
        tablefmt=LATEX_BOOKTABS,
        disable_numparse=True,
        colalign=table.aligns(),
    )
    out = ["\\begin{table}[htbp]", "\\centering", f"\\caption{{{latex_escape(caption)}}}", body]
    if table.after:
        out.append("\\par\\smallskip{\\footnotesize " + "\\par\n".join(map(latex_escape, table.after)) + "\\par}")
    return "\n".join([*out, "\\end{table}"])


def render_latex(sections: list[Section]) -> str:
    """The sections as LaTeX: a table environment per table, captioned with its title and paragraphs; the
    sections' own text as comments."""
    out = ["% Written by scripts/collect_results.py --format latex; needs \\usepackage{booktabs}."]
    for section in sections:
        out.append("\n".join(f"% {line}" for line in filter(None, [section.heading, *section.intro])))
        out += [
            latex_table(table, ". ".join([table.title, *table.before]) if table.title else " ".join(section.intro))
            for table in section.tables
        ]
    return "\n\n".join(filter(None, out))
