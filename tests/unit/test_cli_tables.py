"""The CLI's tables are printed whole (scheduler/cli/tables.py): no cell cut to "…",
no column cropped, on a terminal of any width and in a log."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.table import Table

from scheduler.cli.tables import CONTINUED, print_table

HEADERS = ("member", "GPU model", "used on others' hardware", "lost", "mean JCT", "jobs")
ROWS = [
    ("ai-startup", "NVIDIA-A100-SXM4-80GB", "1,543.2", "274.9", "15,338 s", "1264/1264"),
    ("uni-north", "NVIDIA-H100-80GB-HBM3", "960.3", "[b]0[/b]", "9 s", "79/79"),
]
BORDERS = "┏┃┡│├└┓┩┤┘"


def table() -> Table:
    t = Table(title="shares", caption="pool cost 88,448.00 EUR")
    for header in HEADERS:
        t.add_column(header, justify="left" if header == "member" else "right")
    for row in ROWS:
        t.add_row(*row)
    return t


def printed(width: int, terminal: bool, keys: int = 1) -> str:
    console = Console(file=io.StringIO(), width=width, force_terminal=terminal, color_system=None)
    print_table(console, table(), keys)
    return console.file.getvalue()  # type: ignore[attr-defined]


def cells_of(text: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines() if line[:1] == "│"
    ]


@pytest.mark.parametrize("width", [20, 40, 60, 80, 100, 200])
def test_a_terminal_gets_every_cell_whole(width: int) -> None:
    text = printed(width, terminal=True)
    assert "…" not in text
    rows = cells_of(text)
    parts = text.count("┏")
    assert parts == 1 if width >= 80 else parts > 1
    assert text.count(CONTINUED) == parts - 1
    assert text.count("pool cost") == 1 and text.rstrip().endswith("pool cost 88,448.00 EUR")
    # Every cell of every row, each part led by the member.
    expected = {("ai-startup", cell) for cell in ROWS[0]} | {("uni-north", c) for c in ROWS[1]}
    seen = {(row[0], cell) for row in rows for cell in row}
    plain = {(m, c.replace("[b]", "").replace("[/b]", "")) for m, c in expected}
    assert plain <= seen
    if width >= 40:  # one column beside the member fits: nothing is wider than the screen
        assert max(len(line) for line in text.splitlines()) <= width


def test_two_key_columns_lead_every_part() -> None:
    rows = cells_of(printed(60, terminal=True, keys=2))
    assert all(row[1].startswith("NVIDIA-") for row in rows)
    assert len(rows) == 2 * printed(60, terminal=True, keys=2).count("┏")


@pytest.mark.parametrize("width", [40, 80])
def test_a_log_gets_the_table_at_its_natural_width(width: int) -> None:
    text = printed(width, terminal=False)
    lines = [line for line in text.splitlines() if line[:1] in BORDERS]
    assert "…" not in text and text.count("┏") == 1
    assert len({len(line) for line in lines}) == 1 and len(lines[0]) > width
    assert all(line[-1] in BORDERS for line in lines)
    assert "used on others' hardware" in text  # a header on one line


def test_a_table_that_fits_is_printed_as_rich_prints_it() -> None:
    wide = Console(file=io.StringIO(), width=200, color_system=None)
    wide.print(table())
    assert printed(200, terminal=True) == wide.file.getvalue()  # type: ignore[attr-defined]
