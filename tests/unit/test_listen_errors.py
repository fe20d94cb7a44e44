"""An address to listen on that is taken, or not an address at all, is one line naming
it (exit 2 from the commands), for every listener: the API (alone or with its read
front), the daemon's /metrics, the meter's /metrics and serve-api's own. Each was a
traceback (`RuntimeError: Failed to bind`, `OSError: Address already in use`,
`socket.gaierror` for a name that does not resolve)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from policies.errors import ListenError
from reports.metering.exporter import MeterMetrics, serve
from scheduler.cli.main import main
from scheduler.k8s.exporter import SchedulerMetrics
from tests.unit.test_api_support import TOKEN_FILE, running_server


@pytest.fixture
def taken() -> Iterator[str]:
    """An address on loopback that another socket listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield f"127.0.0.1:{holder.getsockname()[1]}"


@pytest.mark.parametrize("read_front", [False, True], ids=["alone", "with-front"])
def test_the_api_on_a_taken_address(tmp_path: Path, taken: str, read_front: bool) -> None:
    with (
        pytest.raises(ListenError, match=f"cannot listen on {taken}: taken by another"),
        running_server(tmp_path, address=taken, read_front=read_front),
    ):
        pass


@pytest.mark.parametrize("read_front", [False, True], ids=["alone", "with-front"])
def test_a_second_api_on_the_port_of_a_running_one(tmp_path: Path, read_front: bool) -> None:
    # gRPC's listeners share a port (SO_REUSEPORT) unless told not to: a second API
    # started without error, and calls went to one or the other, each with its own policy.
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    with running_server(tmp_path / "first", address="127.0.0.1:0", read_front=read_front) as api:
        address = f"127.0.0.1:{api.server.port}"
        with (
            pytest.raises(ListenError, match=f"cannot listen on {address}: taken by another"),
            running_server(tmp_path / "second", address=address, read_front=read_front),
        ):
            pass


def test_the_daemons_and_the_meters_metrics_on_a_taken_address(taken: str) -> None:
    host, port = taken.split(":")
    with pytest.raises(ListenError, match=f"cannot listen on {taken}: Address already in use"):
        SchedulerMetrics().serve(int(port), host)
    with pytest.raises(ListenError, match=f"cannot listen on {taken}: Address already in use"):
        serve(MeterMetrics(), int(port), host)


@pytest.mark.parametrize("flag", ["--listen", "--metrics-listen"])
def test_serve_api_exits_2_naming_the_address(
    tmp_path: Path, taken: str, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "tokens.yaml").write_text(TOKEN_FILE)
    args = ["serve-api", "--tokens", str(tmp_path / "tokens.yaml")]
    args += ["--policy", str(tmp_path / "p.yaml")]
    args += ["--ledger-url", f"sqlite:///{tmp_path / 'ledger.db'}", "--listen", "127.0.0.1:0"]
    with pytest.raises(SystemExit) as done:
        main([*args, flag, taken])
    assert done.value.code == 2
    assert f"cannot listen on {taken}" in capsys.readouterr().err
    # The built-in policy it wrote for the start is gone with the refused start, and
    # the ledger's audit history holds no version of it.
    assert not [p.name for p in tmp_path.iterdir() if "p.yaml" in p.name]
    assert _recorded_versions(tmp_path / "ledger.db") == []


def test_serve_api_refusing_plaintext_off_loopback_records_no_policy_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "tokens.yaml").write_text(TOKEN_FILE)
    args = ["serve-api", "--tokens", str(tmp_path / "tokens.yaml")]
    args += ["--policy", str(tmp_path / "p.yaml"), "--listen", "0.0.0.0:0"]
    args += ["--ledger-url", f"sqlite:///{tmp_path / 'ledger.db'}"]
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 2
    assert "refusing to serve the API on 0.0.0.0:0 without TLS" in capsys.readouterr().err
    assert _recorded_versions(tmp_path / "ledger.db") == []


def test_an_api_whose_policy_cannot_be_read_gives_its_address_back(tmp_path: Path) -> None:
    from policies.errors import PolicyError
    from policies.inventory import load_inventory
    from policies.loader import DEFAULT_POLICY, load_policy
    from scheduler.api.frozen_view import FrozenClusterView
    from scheduler.api.server import ApiServer
    from tests.unit.test_api_support import make_config

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    (tmp_path / "policy.yaml").write_text("spec: [not, a, policy]\n")
    config = make_config(tmp_path, address=address)
    view = FrozenClusterView.from_inventory(load_policy(DEFAULT_POLICY), load_inventory())
    with pytest.raises(PolicyError):
        ApiServer(view, config)
    assert _recorded_versions(tmp_path / "ledger.db") == []
    with socket.socket() as again:  # a second start in this process may listen there
        again.bind(("127.0.0.1", int(address.rsplit(":", 1)[1])))


def _recorded_versions(ledger: Path) -> list[int]:
    from scheduler.api.policy_audit import AuditLog

    audit = AuditLog(f"sqlite:///{ledger}")
    try:
        return [v.version for v in audit.list()]
    finally:
        audit.close()


def test_serve_api_keeps_a_policy_file_that_was_there(
    tmp_path: Path, taken: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from policies.loader import DEFAULT_POLICY

    (tmp_path / "tokens.yaml").write_text(TOKEN_FILE)
    (tmp_path / "p.yaml").write_text(DEFAULT_POLICY.read_text())
    args = ["serve-api", "--tokens", str(tmp_path / "tokens.yaml")]
    args += ["--policy", str(tmp_path / "p.yaml"), "--listen", taken]
    args += ["--ledger-url", f"sqlite:///{tmp_path / 'ledger.db'}"]
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 2
    assert (tmp_path / "p.yaml").read_text() == DEFAULT_POLICY.read_text()
