"""The tables as text (compact Markdown pipe tables, unpadded: the default) or Markdown (aligned columns), with
their ### and #### headings, paragraphs and notes."""

from __future__ import annotations

from tabulate import tabulate

from results.numbers import Stat
from results.tables import Section, Table


def markdown_table(header: list[str], lines: list[list[str]]) -> str:
    """The text format's table: Markdown pipes, unpadded."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines]
    return "\n".join(out)


def _cell_text(cell) -> str:
    return cell.text() if isinstance(cell, Stat) else cell


def table_text(table: Table, fmt: str) -> str:
    lines = [[_cell_text(cell) for cell in line] for line in table.lines]
    if fmt == "text":
        return markdown_table(table.header, lines)
    escaped = [[cell.replace("|", "\\|") for cell in line] for line in lines]
    return tabulate(escaped, table.header, tablefmt="pipe", disable_numparse=True, colalign=table.aligns())


def render_text(sections: list[Section], fmt: str) -> str:
    """The sections as text or Markdown (``fmt``): ### and #### headings, paragraphs, pipe tables."""
    blocks = []
    for section in sections:
        tables = [
            "\n\n".join(
                [
                    *([f"#### {table.title}"] if table.title else []),
                    *table.before,
                    table_text(table, fmt),
                    *(["\n".join(table.after)] if table.after else []),
                ]
            )
            for table in section.tables
        ]
        blocks.append("\n\n".join([*([f"### {section.heading}"] if section.heading else []), *section.intro, *tables]))
    return "\n\n".join(blocks)
