"""`fairpool trace check` (read_trace) refuses values no scheduler or API can carry, each
with its line and column: control characters in names, priorities beyond int32, absurd
durations, times and counts."""

from __future__ import annotations

import pytest

from scheduler.traces.csv import read_trace
from scheduler.traces.errors import TraceError

HEADER = "job_id,org,submit_time,duration_s,num_pods,gpus_per_pod,gpu_model,priority\n"


@pytest.mark.parametrize(
    ("row", "column", "words"),
    [
        ("j\x001,physics,0,60,1,1,,0", "job_id", "control character"),
        ("j1,phys\tics,0,60,1,1,,0", "org", "control character"),
        ("j1,physics,0,60,1,1,A\x00100,0", "gpu_model", "control character"),
        ("j" + "x" * 300 + ",physics,0,60,1,1,,0", "job_id", "longer than 253"),
        ("j1,physics,0,60,1,1,,2147483648", "priority", "int32"),
        ("j1,physics,0,60,1,1,,-2147483649", "priority", "int32"),
        ("j1,physics,0,60,1,1,," + "9" * 5000, "priority", "not an integer"),
        ("j1,physics,0,1e300,1,1,,0", "duration_s", "beyond"),
        ("j1,physics,1e300,60,1,1,,0", "submit_time", "beyond"),
        ("j1,physics,0,60,1e300,1,,0", "num_pods", "at most 100,000"),
        ("j1,physics,0,60,1,1000001,,0", "gpus_per_pod", "at most 100,000"),
    ],
)
def test_values_beyond_what_the_api_carries_are_refused_with_the_line(
    row: str, column: str, words: str
) -> None:
    with pytest.raises(TraceError) as info:
        read_trace(HEADER + "ok,physics,0,60,1,1,,5\n" + row + "\n")
    issue = info.value.issues[0]
    assert (issue.line, issue.column) == (3, column), info.value
    assert words in issue.message


def test_the_extremes_that_fit_are_accepted() -> None:
    trace = read_trace(
        HEADER + "j1,physics,0,60,1,1,,2147483647\nj2,physics,0,60,1,1,,-2147483648\n"
    )
    assert sorted(j.priority for j in trace.jobs) == [-(2**31), 2**31 - 1]


@pytest.mark.parametrize(
    ("row", "column", "shown"),
    [
        ("j1\x0b,physics,0,60,1,1,,0", "job_id", r"'\x0b'"),
        ("j1,physics\x1c,0,60,1,1,,0", "org", r"'\x1c'"),
        ("\x1fj1,physics,0,60,1,1,,0", "job_id", r"'\x1f'"),
        ("j1,physics,0,60,1,1,A100\x0c,0", "gpu_model", r"'\x0c'"),
        ("j1,physics,0,60\x1d,1,1,,0", "duration_s", r"'\x1d'"),
        ("j1,physics,0,60,1,1,,5\t", "priority", r"'\t'"),
    ],
)
def test_a_control_character_trimmed_off_a_cell_is_still_refused(
    row: str, column: str, shown: str
) -> None:
    """str.strip() removes \\x0b, \\x0c, \\x1c-\\x1f and tabs around a cell, so a name
    ending in one was taken as the name without it."""
    with pytest.raises(TraceError) as info:
        read_trace(HEADER + "ok,physics,0,60,1,1,,5\n" + row + "\n")
    assert [(i.line, i.column, i.message) for i in info.value.issues] == [
        (3, column, f"control character {shown} in the cell")
    ]


def test_a_control_character_in_the_header_or_a_blank_row_is_refused() -> None:
    with pytest.raises(TraceError) as info:
        read_trace(HEADER.replace("org", "org\x1e") + "j1,physics,0,60,1,1,,0\n")
    assert [str(i) for i in info.value.issues] == [
        r"line 1, column org: control character '\x1e' in the cell"
    ]
    with pytest.raises(TraceError) as info:
        read_trace(HEADER + "j1,physics,0,60,1,1,,0\n\x0c\n   \nj2,physics,0,60,1,1,,0\n")
    assert [str(i) for i in info.value.issues] == [
        r"line 3: control character '\x0c' in a blank row"
    ]
