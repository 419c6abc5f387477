"""A table in no particular format (Table: a header, lines of text and Stat cells, which entry of each column is
the best, its title and notes) and the sections that group them; results/render_*.py write them."""

from __future__ import annotations

from dataclasses import dataclass, field

from results.numbers import MAX, Stat


@dataclass
class Table:
    """One table in no particular format: cells are text or Stat; ``better`` says, per column, whether its
    highest (MAX) or lowest (MIN) entry is the best one (None: no best)."""

    header: list[str]
    lines: list[list]
    better: list[str | None]
    title: str = ""  # a #### heading; the LaTeX caption
    before: list[str] = field(default_factory=list)  # paragraphs between the title and the table
    after: list[str] = field(default_factory=list)  # notes below the table, one a line

    def drop(self, column: int) -> None:
        for cells in (self.header, self.better, *self.lines):
            del cells[column]

    def numeric(self, column: int) -> bool:
        return any(isinstance(line[column], Stat) for line in self.lines)

    def aligns(self) -> list[str]:
        """Each column's alignment: numbers right, text left."""
        return ["right" if self.numeric(column) else "left" for column in range(len(self.header))]

    def best_cells(self) -> set[tuple[int, int]]:
        """(line, column) of the best entry of each column that has one, as shown (rounded); ties all."""
        best = set()
        for column, better in enumerate(self.better):
            shown = {
                index: round(line[column].mean, line[column].digits)
                for index, line in enumerate(self.lines)
                if isinstance(line[column], Stat) and line[column].mean is not None
            }
            if better and shown:
                top = (max if better == MAX else min)(shown.values())
                best |= {(index, column) for index, value in shown.items() if value == top}
        return best


@dataclass
class Section:
    heading: str  # a ### heading ("" for none)
    intro: list[str]  # paragraphs
    tables: list[Table]
