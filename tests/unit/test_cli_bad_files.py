"""Bad input files make the CLI print one clear line naming the file (and line) and exit
2, never a traceback: deep nesting, huge integers, bytes that are not UTF-8."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from policies.loader import DEFAULT_POLICY
from scheduler.cli.main import cli


def _policy(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_bytes(content)
    return path


CASES = {
    "deep": DEFAULT_POLICY.read_text().replace("weight: 2", "weight: " + "[" * 500 + "]" * 500),
    "huge-integer": DEFAULT_POLICY.read_text().replace("weight: 2", "weight: " + "9" * 5000),
    "block-deep": "spec:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 400)),
}


@pytest.mark.parametrize("case", [*CASES, "not-utf8"])
@pytest.mark.parametrize("command", ["validate", "apply"])
def test_bad_policy_files_are_one_line_and_exit_2(tmp_path: Path, case: str, command: str) -> None:
    content = b"\xff\xfe weight: 2\n" if case == "not-utf8" else CASES[case].encode()
    path = _policy(tmp_path, content)
    args = ["policy", command, str(path)]
    if command == "apply":
        args += ["--token", "k8Hd9s-Qm2xV7pLr", "--server", "127.0.0.1:1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), result.output
    if case != "not-utf8":
        assert "line " in lines[0]


def test_a_non_utf8_trace_is_one_line_and_exit_2(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_bytes(b"job_id,org,submit_time,duration_s,num_pods,gpus_per_pod\n\xff\xfe\n")
    result = CliRunner().invoke(cli, ["trace", "check", str(trace)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "line 2: not UTF-8 text" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["policy", "get", "--version", "9" * 20],
        ["policy", "apply", str(DEFAULT_POLICY), "--expected-version", "9" * 20],
        ["policy", "diff", "9" * 20, "1"],
    ],
)
def test_a_version_beyond_the_apis_int64_exits_2_before_any_call(args: list[str]) -> None:
    # It was a protobuf "ValueError: Value out of range" traceback.
    result = CliRunner().invoke(
        cli, [*args, "--token", "k8Hd9s-Qm2xV7pLr", "--server", "127.0.0.1:1"]
    )
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "9" * 20 in result.output
    assert "9223372036854775807" in result.output


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--start", "0001-01-01T00:00+01:00"),  # before year 1 in UTC: was a traceback
        ("--end", "9999-12-31T23:59-05:00"),  # after year 9999 in UTC: was a traceback
        ("--start", "1969-12-31T23:00"),
    ],
)
def test_a_usage_range_outside_the_years_exits_2_naming_the_option(option: str, value: str) -> None:
    result = CliRunner().invoke(
        cli, ["usage", option, value, "--token", "k8Hd9s-Qm2xV7pLr", "--server", "127.0.0.1:1"]
    )
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert option in result.output and "1970 to 2200" in result.output


def test_serve_api_refuses_a_cluster_whose_gpu_model_the_policy_does_not_price(
    tmp_path: Path,
) -> None:
    # Its what-if replays would end at the cost report.
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(
        (Path(__file__).parents[2] / "policies" / "defaults" / "cluster.yaml")
        .read_text()
        .replace("NVIDIA-A100-SXM4-80GB", "A100")
    )
    (tmp_path / "tokens.csv").write_text("k8Hd9s-Qm2xV7pLr,admin\n")
    args = ["serve-api", "--tokens", str(tmp_path / "tokens.csv"), "--cluster", str(cluster)]
    args += ["--policy", str(tmp_path / "p.yaml"), "--listen", "127.0.0.1:0"]
    args += ["--ledger-url", f"sqlite:///{tmp_path / 'ledger.db'}"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "gpuModel: GPU model 'A100' is not one of the policy's gpuModels" in result.output
    # The line of each group that names it in the file.
    assert "line 26: spec.nodeGroups[" in result.output
    assert "line 34: spec.nodeGroups[" in result.output


def test_serve_api_with_a_policy_path_through_a_file_exits_2(tmp_path: Path) -> None:
    # The built-in policy written there was a FileExistsError traceback.
    (tmp_path / "a-file").write_text("kept\n")
    (tmp_path / "tokens.csv").write_text("k8Hd9s-Qm2xV7pLr,admin\n")
    args = ["serve-api", "--tokens", str(tmp_path / "tokens.csv"), "--listen", "127.0.0.1:0"]
    args += ["--policy", str(tmp_path / "a-file" / "p.yaml")]
    args += ["--ledger-url", f"sqlite:///{tmp_path / 'ledger.db'}"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "a-file/p.yaml: cannot write there" in result.output
    assert (tmp_path / "a-file").read_text() == "kept\n"


def test_policy_diff_takes_only_ascii_digits_for_a_version(tmp_path: Path) -> None:
    """'²' is a digit to `str.isdigit` and an `int()` traceback: it names a file."""
    args = ["policy", "diff", "²", str(DEFAULT_POLICY), "--server", "127.0.0.1:1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ²: cannot read"), result.output


def test_a_policy_file_that_cannot_be_read_is_named_alone(tmp_path: Path) -> None:
    """The file, then why: "nofile.yaml: <document>: cannot read" named a field that is
    not there."""
    missing = tmp_path / "nofile.yaml"
    result = CliRunner().invoke(cli, ["policy", "validate", str(missing)])
    assert result.exit_code == 2, result.output
    said = "".join(result.output.split())  # rich wraps lines anywhere
    assert said == f"error:{missing}:cannotread:Nosuchfileordirectory", result.output
