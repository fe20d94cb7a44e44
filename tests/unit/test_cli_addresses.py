"""Addresses given on the command line (`--server`, `--listen`, `--api-listen`,
`--metrics-listen`, `--metrics-port`), the client's call `--timeout` and the API's
`--max-message-bytes` are checked before anything listens or connects: gRPC took
`127.0.0.1:99999` as port 34463 (the number modulo 65536), and the metrics server and
gRPC's message limit failed with OverflowError tracebacks."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from scheduler.cli.main import cli
from scheduler.cli.options import Address


@pytest.mark.parametrize(
    "text",
    ["127.0.0.1:50051", "localhost:1", "[::1]:65535", "example.org:443"],
)
def test_host_and_port_are_taken_as_given(text: str) -> None:
    assert Address(listen=True).convert(text, None, None) == text
    assert Address(listen=False).convert(text, None, None) == text


@pytest.mark.parametrize(
    "text",
    ["unix:/run/fairpool.sock", "unix-abstract:fp", "dns:///localhost:50051", "ipv4:127.0.0.1:7"],
)
def test_a_client_may_give_a_grpc_target(text: str) -> None:
    assert Address(listen=False).convert(text, None, None) == text


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1:99999",
        "127.0.0.1:65536",
        "127.0.0.1",
        "not a host",
        ":50051",
        "[::1]",
        "[::1:5",
        "h:-1",
        "h:5x",
        "127.0.0.1:²",  # a digit to str.isdigit, an int() traceback
        "127.0.0.1:٥٠٠٥١",  # Arabic-Indic digits: int() reads 50051, gRPC does not
    ],
)
def test_what_is_not_host_and_port_is_refused(text: str) -> None:
    for listen in (True, False):
        with pytest.raises(click.BadParameter, match="is not host:port"):
            Address(listen=listen).convert(text, None, None)


def test_port_zero_is_for_listening_only() -> None:
    assert Address(listen=True).convert("127.0.0.1:0", None, None) == "127.0.0.1:0"
    with pytest.raises(click.BadParameter, match="port from 1 to 65535"):
        Address(listen=False).convert("127.0.0.1:0", None, None)


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["usage", "--server", "127.0.0.1:99999"], "--server"),
        (["serve-api", "--tokens", "t.csv", "--listen", "127.0.0.1:99999"], "--listen"),
        (
            ["serve-api", "--tokens", "t.csv", "--metrics-listen", "127.0.0.1:70000"],
            "--metrics-listen",
        ),
        (["run", "--api-listen", "0.0.0.0:70000"], "--api-listen"),
        (["run", "--metrics-port", "99999"], "--metrics-port"),
        # A traceback out of logging.basicConfig.
        (["run", "--log-level", "VERBOSE"], "--log-level"),
        # Names the API server refuses (or, for a scheduler name, no pod can carry): they
        # failed the daemon's first Lease or ConfigMap write, or it waited for no pod.
        (["run", "--scheduler-name", ""], "--scheduler-name"),
        (["run", "--scheduler-name", "Fair_Pool"], "--scheduler-name"),
        (["run", "--lease-namespace", "fairpool system"], "--lease-namespace"),
        (["run", "--lease-name", "-lease"], "--lease-name"),
        (["run", "--usage-history-configmap", "History"], "--usage-history-configmap"),
        (["run", "--policy-object", "x" * 254], "--policy-object"),
        (
            ["serve-api", "--tokens", "t.csv", "--max-message-bytes", "99999999999"],
            "--max-message-bytes",
        ),
    ],
)
def test_commands_exit_2_naming_the_flag(args: list[str], flag: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert f"Invalid value for '{flag}'" in result.output


@pytest.mark.parametrize("value", ["nan", "inf", "1e300", "86401", "0.05"])
def test_a_call_timeout_beyond_a_day_or_not_finite_exits_2(value: str) -> None:
    # gRPC's deadline overflowed: nan, infinity and 1e300 gave DEADLINE_EXCEEDED at once.
    result = CliRunner().invoke(cli, ["shares", "--server", "127.0.0.1:1", "--timeout", value])
    assert result.exit_code == 2
    assert "Invalid value for '--timeout'" in result.output


@pytest.mark.parametrize("level", ["debug", "INFO", "Warning"])
def test_a_log_level_in_any_case_is_taken(level: str) -> None:
    result = CliRunner().invoke(cli, ["run", "--log-level", level, "--policy", "/nonexistent"])
    assert "--log-level" not in result.output


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a/b/c", "'b/c' is not a DNS-1123 subdomain"),
        ("Fairpool/policy", "'Fairpool' is not a DNS-1123 label"),
        ("fairpool\n/policy", "'fairpool\\\\n' is not a DNS-1123 label"),
        ("fairpool-system/policy.v2", None),
    ],
)
def test_a_policy_configmap_is_a_namespace_and_a_name(text: str, problem: str | None) -> None:
    from policies.errors import InputError
    from scheduler.k8s.daemon import PolicyConfigMap

    if problem is None:
        assert PolicyConfigMap.parse(text).name == "policy.v2"
        return
    with pytest.raises(InputError, match=f"--policy-configmap: {problem}"):
        PolicyConfigMap.parse(text)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["explain", "-n", "lab-a"], "--namespace: only with a NAME"),
        (["explain", "job-1", "--member", "lab-a"], "--member: only with the queue"),
        (["explain", "job-1", "--limit", "5"], "--limit: only with the queue"),
    ],
)
def test_explain_refuses_an_option_the_form_it_is_given_with_ignores(
    args: list[str], message: str
) -> None:
    """`--namespace` narrows a NAME, `--member` and `--limit` the queue: given with the
    other form they were ignored (`explain -n lab-a` listed every member's queue), and
    no call is made (the server here does not exist)."""
    result = CliRunner().invoke(cli, [*args, "--server", "127.0.0.1:1", "--timeout", "1"])
    assert result.exit_code == 2, result.output
    assert message in result.output
