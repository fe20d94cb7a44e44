"""Printing a table whole: no cell cut to "…", no column cropped at the edge.

rich fits a table to the console by shrinking its widest columns and cutting their
cells; a member name read as "ai-s…" or a figure as "1,54…" is a wrong figure read. So
a log or a pipe, which has no edge to wrap at, gets the table at its natural width, and
a terminal too narrow for it gets it in parts: as many columns in each as fit with
every header wrapped between its words, the key columns (the member, the GPU model)
repeated in each."""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal, cast

from rich.cells import cell_len
from rich.console import Console
from rich.measure import Measurement
from rich.table import Column, Table
from rich.text import Text

CONTINUED = "(continued)"


def _plain(cell: object) -> str:
    if isinstance(cell, Text):
        return cell.plain
    return Text.from_markup(cell).plain if isinstance(cell, str) else str(cell)


def least_width(column: Column, prose: bool = False) -> int:
    """The narrowest the column can be without cutting a cell or a header word. A cell
    is a figure ("16.4 h / 50.2 h", "1,543.2 → 1,548.9") and stays on one line;
    `prose` (an error, a comment): its cells wrap between words as headers do."""
    words = _plain(column.header).split()
    if prose:
        cells = [cell_len(word) for cell in column.cells for word in _plain(cell).split()]
    else:
        cells = [cell_len(line) for cell in column.cells for line in _plain(cell).splitlines()]
    return max(1, *cells, *(cell_len(word) for word in words))


def print_table(console: Console, table: Table, keys: int = 1, prose: Collection[str] = ()) -> None:
    """Print `table` whole (module docstring). `keys`: how many leading columns name a
    row, repeated in every part; `prose`: the headers of columns whose cells are text
    that may wrap between words (`least_width`)."""
    natural = _natural(console, table)
    if natural <= console.width:
        console.print(table)
        return
    if not console.is_terminal:
        _wider(console, natural).print(table)
        return
    for part in split(table, console.width, keys, prose):
        wide = _natural(console, part)
        if wide <= console.width:
            console.print(part)
        else:
            # Narrower than one column beside the keys: the terminal wraps its lines.
            _wider(console, wide).print(part)


def _natural(console: Console, table: Table) -> int:
    return Measurement.get(console, console.options.update_width(10_000), table).maximum


def _wider(console: Console, width: int) -> Console:
    """A console like `console` on the same file, `width` wide."""
    system = console.color_system
    return Console(
        file=console.file,
        width=width,
        highlight=False,
        force_terminal=console.is_terminal,
        color_system=cast(Literal["standard", "256", "truecolor"] | None, system),
    )


def split(table: Table, width: int, keys: int = 1, prose: Collection[str] = ()) -> list[Table]:
    """The table's columns in tables no wider than `width` (one column beside the keys
    at least), each column as narrow as its cells allow: rich, left to fit, narrows the
    widest columns first, below what their cells need, then widens them back, so the
    table came out wider than the terminal anyway."""
    columns = table.columns
    keys = min(keys, len(columns))
    least = [least_width(c, _plain(c.header) in prose) for c in columns]
    # Each column takes its cells' width, its padding and a border; the table one more.
    _, right, _, left = table.padding
    edge = left + right + (1 if table.box else 0)

    def taken(picked: list[int]) -> int:
        return (1 if table.box else 0) + sum(least[i] + edge for i in picked)

    parts: list[list[int]] = []
    current = list(range(keys))
    for i in range(keys, len(columns)):
        if len(current) > keys and taken([*current, i]) > width:
            parts.append(current)
            current = list(range(keys))
        current.append(i)
    parts.append(current)
    last = len(parts) - 1
    return [_part(table, picked, least, k == 0, k == last) for k, picked in enumerate(parts)]


def _part(table: Table, picked: list[int], least: list[int], first: bool, last: bool) -> Table:
    part = Table(
        title=table.title if first else CONTINUED,
        title_justify=table.title_justify,
        caption=table.caption if last else None,
        box=table.box,
        show_header=table.show_header,
        show_lines=table.show_lines,
        padding=table.padding,
        highlight=table.highlight,
    )
    cells = [list(table.columns[i].cells) for i in picked]
    for i in picked:
        column = table.columns[i]
        part.add_column(
            column.header,
            justify=column.justify,
            style=column.style,
            header_style=column.header_style,
            no_wrap=column.no_wrap,
            width=least[i],
        )
    for r, row in enumerate(table.rows):
        part.add_row(*(c[r] for c in cells), style=row.style, end_section=row.end_section)
    return part
