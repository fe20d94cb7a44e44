"""Files and folders written for a user: whole or not at all, with the mode the user's
umask gives (not the private mode of the temporary file they were written as)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from policies.errors import OutputError
from policies.files import new_mode, open_whole, staging_folder, write_whole
from reports.costmodel import build_month_report
from reports.rendering.render import write_report
from scheduler.traces.csv import read_trace, write_trace
from tests.unit.test_costmodel import CAPACITY, USAGE, make_policy


@pytest.fixture(params=[0o022, 0o027])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_file_gets_the_umask_mode(tmp_path: Path, umask: int) -> None:
    target = tmp_path / "a" / "b.txt"
    write_whole(target, "hello\n")
    assert target.read_text() == "hello\n"
    assert _mode(target) == 0o666 & ~umask
    assert new_mode() == 0o666 & ~umask
    assert new_mode(folder=True) == 0o777 & ~umask


def test_a_replaced_file_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "secret.yaml"
    target.write_text("old")
    target.chmod(0o600)
    write_whole(target, b"new")
    assert target.read_bytes() == b"new"
    assert _mode(target) == 0o600


def test_a_failure_keeps_what_was_there_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "t.csv"
    target.write_text("before\n")
    with pytest.raises(RuntimeError), open_whole(target) as handle:
        handle.write("half")
        raise RuntimeError("stop")
    assert target.read_text() == "before\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]


def test_a_path_through_a_file_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(OutputError, match=r"f/x.csv: cannot write there .*is a file"):
        write_whole(tmp_path / "f" / "x.csv", "x")


def test_a_write_error_inside_the_block_names_the_path(tmp_path: Path) -> None:
    target = tmp_path / "t.csv"
    with (
        pytest.raises(OutputError, match=r"t.csv: cannot write there \(No space left"),
        open_whole(target),
    ):
        raise OSError(28, "No space left on device")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_staging_folder_gets_a_new_folders_mode(tmp_path: Path, umask: int) -> None:
    staging = staging_folder(tmp_path / "out")
    assert staging.parent == tmp_path and staging.name.startswith(".out.")
    assert _mode(staging) == 0o777 & ~umask


def test_a_trace_is_readable_as_any_file_the_user_makes(tmp_path: Path, umask: int) -> None:
    source = Path(__file__).parents[1] / "data" / "traces" / "canonical_seconds.csv"
    target = tmp_path / "trace.csv"
    write_trace(read_trace(source), target)
    assert _mode(target) == 0o666 & ~umask  # mkstemp's 0600 before


def test_a_report_folder_is_readable_as_any_folder_the_user_makes(
    tmp_path: Path, umask: int
) -> None:
    report = build_month_report("2026-10", make_policy(idle="by-usage"), USAGE, CAPACITY)
    out = tmp_path / "report"
    written = write_report(report, out)
    assert _mode(out) == 0o777 & ~umask  # mkdtemp's 0700 before
    assert all(_mode(p) == 0o666 & ~umask for p in written)
