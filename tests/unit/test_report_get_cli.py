"""`fairpool report get MONTH --out DIR` against a served API: the files the caller may
read are written, and a folder that cannot be one is a line naming it, not a traceback."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from scheduler.cli.main import cli
from tests.unit.test_api_support import REPORT_MONTH, TOKENS, running_server


def test_report_get_writes_the_files_and_refuses_a_path_through_a_file(tmp_path: Path) -> None:
    # `report get --out` had no test; a folder through a file was a FileExistsError
    # traceback about a temporary file.
    with running_server(tmp_path) as api:
        server = ["--server", f"127.0.0.1:{api.server.port}", "--token", TOKENS["admin"]]
        out = tmp_path / "report"
        get = ["report", "get", REPORT_MONTH, "--out"]
        written = CliRunner().invoke(cli, [*get, str(out), *server])
        assert written.exit_code == 0, written.output
        assert (out / "report.html").is_file() and (out / "summary.csv").is_file()
        (tmp_path / "a-file").write_text("kept\n")
        refused = CliRunner().invoke(cli, [*get, str(tmp_path / "a-file" / "report"), *server])
        assert refused.exit_code == 2, refused.output
        assert "cannot write there" in refused.output and "a file, not a folder" in refused.output
        assert (tmp_path / "a-file").read_text() == "kept\n"


def test_report_get_replaces_files_already_there_only_with_overwrite(tmp_path: Path) -> None:
    # A second `report get` into the same folder replaced a signed invoice without a
    # word, where `fairpool report` refuses without --overwrite (docs/reports.md).
    with running_server(tmp_path) as api:
        server = ["--server", f"127.0.0.1:{api.server.port}", "--token", TOKENS["admin"]]
        out = tmp_path / "report"
        get = ["report", "get", REPORT_MONTH, "--out", str(out), *server]
        assert CliRunner().invoke(cli, get).exit_code == 0
        (out / "summary.csv").write_text("signed\n")
        refused = CliRunner().invoke(cli, get)
        assert refused.exit_code == 2, refused.output
        assert "summary.csv" in refused.output and "--overwrite" in refused.output
        assert (out / "summary.csv").read_text() == "signed\n"
        replaced = CliRunner().invoke(cli, [*get, "--overwrite"])
        assert replaced.exit_code == 0, replaced.output
        assert (out / "summary.csv").read_text() != "signed\n"
