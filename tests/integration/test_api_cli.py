"""The `fairpool` CLI end to end against a running `fairpool serve-api`, in subprocesses:
output and exit codes (0 done, 1 the server said no, 2 bad input)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from policies.loader import DEFAULT_POLICY, parse_policy
from tests.unit.test_api_support import TOKEN_FILE, TOKENS
from tests.unit.test_api_tls import issue, make_ca

pytestmark = pytest.mark.integration
FAIRPOOL = [sys.executable, "-m", "scheduler.cli.main"]
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Served:
    address: str
    folder: Path
    policy_file: Path

    def run(
        self, *args: str, token: str | None = "admin", **env: str
    ) -> subprocess.CompletedProcess[str]:
        environment = {**os.environ, "FAIRPOOL_SERVER": self.address, "COLUMNS": "200", **env}
        environment.pop("FAIRPOOL_TOKEN", None)
        if token is not None:
            environment["FAIRPOOL_TOKEN"] = TOKENS[token]
        return subprocess.run(
            [*FAIRPOOL, *args],
            capture_output=True,
            text=True,
            cwd=self.folder,
            env=environment,
            timeout=120,
            check=False,
        )


@contextlib.contextmanager
def serve_api(folder: Path, *extra: str) -> Iterator[Served]:
    (folder / "tokens.yaml").write_text(TOKEN_FILE)
    port_file = folder / "port"
    log = (folder / "serve.log").open("w")
    process = subprocess.Popen(
        [
            *FAIRPOOL,
            "serve-api",
            "--listen",
            "127.0.0.1:0",
            "--port-file",
            str(port_file),
            "--tokens",
            "tokens.yaml",
            "--policy",
            "policy.yaml",
            "--ledger-url",
            f"sqlite:///{folder / 'ledger.db'}",
            *extra,
        ],
        cwd=folder,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            assert process.poll() is None, (folder / "serve.log").read_text()
            assert time.monotonic() < deadline, "serve-api did not start"
            time.sleep(0.1)
        yield Served(f"localhost:{port_file.read_text().strip()}", folder, folder / "policy.yaml")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    assert process.returncode == 0, (folder / "serve.log").read_text()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_api(tmp_path_factory.mktemp("cli")) as running:
        yield running


def test_cli_over_mutual_tls(tmp_path: Path) -> None:
    _, ca_cert, ca_key = make_ca(tmp_path, "ca")
    ca = tmp_path / "ca.crt"
    server = issue(tmp_path, "server", (ca_cert, ca_key), server=True)
    client = issue(tmp_path, "client", (ca_cert, ca_key), server=False)
    tls = ("--tls-cert", str(server.cert), "--tls-key", str(server.key))
    with serve_api(tmp_path, *tls, "--client-ca", str(ca)) as api:
        mutual = api.run(
            "shares", "--ca", str(ca), "--cert", str(client.cert), "--key", str(client.key)
        )
        assert mutual.returncode == 0, mutual.stderr
        assert "uni-north" in mutual.stdout
        by_env = api.run(
            "shares",
            FAIRPOOL_CA=str(ca),
            FAIRPOOL_CERT=str(client.cert),
            FAIRPOOL_KEY=str(client.key),
        )
        assert by_env.returncode == 0, by_env.stderr
        no_cert = api.run("shares", "--ca", str(ca))
        assert no_cert.returncode == 1 and "UNAVAILABLE" in no_cert.stderr
        plaintext = api.run("shares")
        assert plaintext.returncode == 1
        half = api.run("shares", "--ca", str(ca), "--cert", str(client.cert))
        assert half.returncode == 2 and "go together" in half.stderr


def test_shares_of_a_name_the_policy_lacks_is_an_error(served: Served) -> None:
    # A typo printed an empty table.
    one = served.run("shares", "--member", "uni-north")
    assert one.returncode == 0, one.stderr
    assert "uni-north" in one.stdout and "lab-bio" not in one.stdout
    typo = served.run("shares", "--member", "uni_north")
    assert typo.returncode == 2
    assert "member: 'uni_north' is not a member of policy version" in typo.stderr
    model = served.run("shares", "--gpu-model", "H100")
    assert model.returncode == 2
    assert "gpu_model: 'H100' is neither a GPU model of policy version" in model.stderr
    queue = served.run("explain", "--member", "uni_north")
    assert queue.returncode == 2
    assert "member: 'uni_north' is not a member of policy version" in queue.stderr
    assert served.run("explain", "--member", "uni-north").returncode == 0


def test_policy_get_apply_history_diff(served: Served) -> None:
    got = served.run("policy", "get")
    assert got.returncode == 0, got.stderr
    current = parse_policy(got.stdout)
    data = yaml.safe_load(got.stdout)
    data["spec"]["members"][0]["purchased"] = {"NVIDIA-A100-SXM4-80GB": 4}
    draft = served.folder / "draft.yaml"
    draft.write_text(yaml.safe_dump(data))

    diff = served.run("policy", "diff", "draft.yaml")
    assert diff.returncode == 0 and "+    purchased:" in diff.stdout

    dry = served.run("policy", "apply", "--dry-run", "draft.yaml")
    assert dry.returncode == 0, dry.stderr
    assert "dry run" in dry.stdout and "12 → 16" not in dry.stdout
    assert "0 → 4" in dry.stdout  # uni-north gains 4 A100s of entitlement

    version = current.version
    applied = served.run(
        "policy", "apply", "--expected-version", str(version), "-m", "buy A100s", "draft.yaml"
    )
    assert applied.returncode == 0, applied.stderr
    assert f"applied: version {version + 1}" in applied.stdout

    stale = served.run("policy", "apply", "--expected-version", str(version), "draft.yaml")
    assert stale.returncode == 1 and "ABORTED" in stale.stderr

    history = served.run("policy", "history")
    assert history.returncode == 0 and "buy A100s" in history.stdout
    assert "admin-person" in history.stdout

    between = served.run("policy", "diff", str(version), str(version + 1))
    assert between.returncode == 0 and "+    purchased:" in between.stdout
    assert parse_policy(served.policy_file.read_text()).version == version + 1


def test_exit_codes(served: Served) -> None:
    assert served.run("shares", token=None).returncode == 1  # UNAUTHENTICATED
    denied = served.run("policy", "apply", str(DEFAULT_POLICY), token="member:uni-north")
    assert denied.returncode == 1 and "PERMISSION_DENIED" in denied.stderr
    bad = served.folder / "bad.yaml"
    bad.write_text(DEFAULT_POLICY.read_text().replace("weight: 2", "weight: -2"))
    invalid = served.run("policy", "apply", "bad.yaml")
    assert invalid.returncode == 2 and "spec.members[2].weight" in invalid.stderr
    missing = served.run("policy", "apply", "nope.yaml")
    assert missing.returncode == 2
    assert served.run("usage", "--start", "yesterday").returncode == 2
    bad_month = served.run("report", "get", "2026-13")
    assert bad_month.returncode == 2 and "INVALID_ARGUMENT" in bad_month.stderr
    unreachable = served.run("shares", FAIRPOOL_SERVER="127.0.0.1:1", token="admin")
    assert unreachable.returncode == 1 and "UNAVAILABLE" in unreachable.stderr


def test_shares_explain_usage_as_a_member(served: Served) -> None:
    mine = served.run("shares", token="member:physics")
    assert mine.returncode == 0, mine.stderr
    assert "physics" in mine.stdout and "uni-north" not in mine.stdout
    everyone = served.run("shares", token="viewer")
    assert everyone.returncode == 0 and "uni-north" in everyone.stdout

    queue = served.run("explain", token="member:physics")
    assert queue.returncode == 0 and "physics-" in queue.stdout
    assert "uni-north-" not in queue.stdout
    job = next(
        line.split("│")[1].strip()
        for line in queue.stdout.splitlines()
        if "physics-" in line and "│" in line
    )
    why = served.run("explain", job, token="member:physics")
    assert why.returncode == 0 and job in why.stdout
    hidden = served.run("explain", job, token="member:uni-north")
    assert hidden.returncode == 1 and "NOT_FOUND" in hidden.stderr

    usage = served.run("usage", token="member:physics")
    assert usage.returncode == 0 and "no metered usage" in usage.stdout
    assert served.run("usage", "--member", "uni-north", token="member:physics").returncode == 1


def test_policy_simulate_shows_current_and_draft(served: Served) -> None:
    trace = served.folder / "trace.csv"
    # physics owns no H100: its gang of 32 can never run, under the current policy
    # (16 on uni-north's nodes, 8 that ai-startup may lend) or the draft (no borrowing).
    trace.write_text(
        "job_id,org,submit_time,duration_s,num_pods,gpus_per_pod,gpu_model\n"
        + "".join(f"u{i},uni-north,{i},3600,1,8,NVIDIA-H100-80GB-HBM3\n" for i in range(6))
        + "g,physics,0,600,4,8,NVIDIA-H100-80GB-HBM3\n"
    )
    data = yaml.safe_load(DEFAULT_POLICY.read_text())
    data["spec"]["sharing"]["borrowing"] = False
    (served.folder / "strict.yaml").write_text(yaml.safe_dump(data))
    done = served.run("policy", "simulate", "strict.yaml", "--trace", "trace.csv", token="viewer")
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("│ uni-north"))
    assert "6 → 6" in row  # jobs completed under both policies
    # The figures a draft is judged by on a contended pool, from each replay's summary.
    for label in ("utilization while work waits", "owners' time to entitlement p99 s"):
        assert any(line.startswith(f"│ {label}") for line in done.stdout.splitlines()), label
    assert "lost to reclaim" in done.stdout and "owners' reclaims" in done.stdout
    never = next(line for line in done.stdout.splitlines() if "jobs that can never run" in line)
    assert [cell.strip() for cell in never.split("│")[2:4]] == ["1", "1"], never
    assert served.run("policy", "simulate", "strict.yaml", token="viewer").returncode == 2
    batched = served.run(
        "policy", "simulate", "strict.yaml", "--trace", "trace.csv", "--batch-seconds", "60",
        token="viewer",
    )  # fmt: skip
    assert batched.returncode == 0, batched.stderr
    assert "6 → 6" in next(
        line for line in batched.stdout.splitlines() if line.startswith("│ uni-north")
    )
    too_long = served.run(
        "policy", "simulate", "strict.yaml", "--trace", "trace.csv", "--batch-seconds", "4000",
        token="viewer",
    )  # fmt: skip
    assert too_long.returncode == 2 and "batch_seconds" in too_long.stderr
    refused = served.run(
        "policy", "simulate", "strict.yaml", "--trace", "trace.csv", token="member:physics"
    )
    assert refused.returncode == 1 and "PERMISSION_DENIED" in refused.stderr


def test_policy_simulate_names_the_users_trace_file_in_its_errors(served: Served) -> None:
    """A bad row is refused by the CLI itself; a row the cluster cannot hold, by the
    server, which knows the nodes. Both name the user's file and line."""
    (served.folder / "strict.yaml").write_text(DEFAULT_POLICY.read_text())
    header = "job_id,org,submit_time,duration_s,num_pods,gpus_per_pod,gpu_model\n"
    (served.folder / "typo.csv").write_text(header + "a,uni-north,0,soon,1,8,\n")
    typo = served.run("policy", "simulate", "strict.yaml", "--trace", "typo.csv", token="viewer")
    assert typo.returncode == 2
    assert "typo.csv: 1 error(s)" in typo.stderr and "line 2, column duration_s" in typo.stderr
    (served.folder / "huge.csv").write_text(header + "a,uni-north,0,60,1,99,\n")
    huge = served.run("policy", "simulate", "strict.yaml", "--trace", "huge.csv", token="viewer")
    assert huge.returncode == 2
    assert "huge.csv: 1 error(s)" in huge.stderr and "line 2, column gpus_per_pod" in huge.stderr
    assert "trace_csv" not in huge.stderr
