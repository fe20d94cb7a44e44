"""File names the CLI prints are printed as given: rich reads `[word]` as a style tag, so
a folder or file named with brackets (`[signed]`, `runs[2]`) lost that part in the line
saying where the output went."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from policies.loader import DEFAULT_POLICY
from scheduler.cli.main import cli

CLUSTER = DEFAULT_POLICY.parent / "cluster.yaml"


def said(args: list[str]) -> str:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return "".join(result.output.split())  # rich wraps lines anywhere


def test_paths_with_brackets_are_printed_whole(tmp_path: Path) -> None:
    folder = tmp_path / "[signed]"
    folder.mkdir()
    policy = folder / "[draft].yaml"
    policy.write_text(DEFAULT_POLICY.read_text())
    assert "valid:" + str(policy) in said(["policy", "validate", str(policy)])
    trace = folder / "[t].csv"
    synth = ["trace", "synth", "--days", "1", "--cluster", str(CLUSTER), "--out", str(trace)]
    assert "synthetictrace->" + str(trace) in said([*synth, "--policy", str(policy)])
    assert "valid:" + str(trace) in said(["trace", "check", str(trace)])
