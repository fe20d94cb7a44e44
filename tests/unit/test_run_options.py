"""`fairpool run`'s options reach the daemon's configuration, and bad ones stop it
before it connects anywhere."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

import scheduler.k8s.client
import scheduler.k8s.daemon
from scheduler.cli import run as run_module
from scheduler.cli.main import main
from scheduler.k8s.daemon import DaemonConfig, pause_before_cycle


class _Stop(Exception):
    """Raised where the daemon would start: the test has what it needs by then."""


def _config_of(args: list[str], monkeypatch: pytest.MonkeyPatch) -> DaemonConfig:
    seen: list[DaemonConfig] = []

    def daemon(_api: object, *, config: DaemonConfig, **_: object) -> None:
        seen.append(config)
        raise _Stop

    monkeypatch.setattr(scheduler.k8s.client, "api_client", lambda *a, **k: object())
    monkeypatch.setattr(scheduler.k8s.daemon, "Daemon", daemon)
    with pytest.raises(_Stop):
        main(["run", "--no-leader-elect", *args])
    return seen[0]


@pytest.mark.parametrize(
    ("flag", "field", "default", "value"),
    [
        ("--batch-seconds", "batch_seconds", 0.05, 60.0),
        ("--bind-workers", "bind_workers", 16, 32),
        ("--owed-read-seconds", "owed_read_seconds", 5.0, 0.0),
    ],
)
def test_option_reaches_the_daemon(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    flag: str,
    field: str,
    default: float,
    value: float,
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("")
    assert getattr(_config_of(["--policy", str(policy)], monkeypatch), field) == default
    config = _config_of(["--policy", str(policy), flag, f"{value:g}"], monkeypatch)
    assert getattr(config, field) == value


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--batch-seconds", "-1"),
        ("--batch-seconds", "nan"),
        ("--batch-seconds", "3601"),
        ("--lease-seconds", "inf"),
        ("--retry-seconds", "nan"),
        ("--bind-workers", "0"),
        ("--bind-workers", "-3"),
        ("--bind-workers", "257"),
        ("--lease-seconds", "1e300"),
        ("--renew-deadline", "3601"),
        ("--retry-seconds", "3601"),
        ("--usage-write-seconds", "1e9"),
        ("--owed-read-seconds", "-1"),
        ("--owed-read-seconds", "inf"),
    ],
)
def test_bad_values_exit_2_naming_the_flag(
    capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["run", "--policy", "unused.yaml", flag, value])
    assert stopped.value.code == 2
    assert flag in capsys.readouterr().err


@pytest.mark.parametrize(
    ("changed", "gap", "pause"),
    [
        (True, 0.05, 0.05),  # a change: wait for more to join the cycle
        (True, 3.0, 3.0),  # a long cycle: leave the binder as long again
        (False, 0.05, 0.0),  # the periodic cycle, already a period late
        (False, 60.0, 59.0),  # --batch-seconds 60: a cycle a minute apart, not 61 s
    ],
)
def test_the_loop_adds_a_batch_only_after_a_change(changed: bool, gap: float, pause: float) -> None:
    assert pause_before_cycle(changed, gap, cycle_seconds=1.0) == pause


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--tls-cert", "api.crt", "--tls-key", "api.key"], "--tls-cert, --tls-key"),
        (["--insecure-plaintext"], "--insecure-plaintext"),
        (["--api-listen", "0.0.0.0:50051"], "--api-listen"),
        (["--no-api-front"], "--api-front/--no-api-front"),
        (["--keep-tokens-on-reload-error"], "--keep-tokens-on-reload-error"),
    ],
)
def test_api_options_without_tokens_exit_2_naming_them(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    named: str,
) -> None:
    # Without --tokens no API is served: these options were silently ignored, and the
    # operator believed the API served (with TLS, on that address).
    monkeypatch.delenv("FAIRPOOL_TOKENS", raising=False)
    policy = tmp_path / "policy.yaml"
    policy.write_text("")
    with pytest.raises(SystemExit) as stopped:
        main(["run", "--no-leader-elect", "--policy", str(policy), *args])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert named in err
    assert "--tokens" in err


def test_api_options_with_tokens_reach_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("")
    monkeypatch.setattr("reports.ledger.connect.probe", lambda _url: None)
    args = ["--policy", str(policy), "--tokens", str(tmp_path / "tokens.yaml")]
    assert _config_of([*args, "--tls-cert", "a.crt", "--tls-key", "a.key"], monkeypatch)


class _FakeDaemon:
    """Where `fairpool run` starts and stops the daemon, without a cluster."""

    def __init__(self, _api: object, **_: object) -> None:
        self.stop_event = threading.Event()
        self.metrics = SimpleNamespace(pod_series=True, serve=lambda port, address: 9464)
        self.policy_object = None
        self.policy_configmap = None
        self.policy_file = None
        self.events: list[str] = []
        _FakeDaemon.last = self

    last: _FakeDaemon | None = None

    def start(self) -> _FakeDaemon:
        self.events.append("start")
        return self

    def wait(self) -> None:
        self.events.append("wait")

    def stop(self, release_lease: bool = True) -> None:
        self.events.append("stop")


def test_an_unusable_token_file_stops_the_daemon_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The API starts after the daemon (it serves the daemon's state): a token file it
    # cannot use ended the command with the daemon never stopped, its Lease held until it
    # expired and the usage history since the last write not saved.
    policy = tmp_path / "policy.yaml"
    policy.write_text("")
    monkeypatch.setattr(scheduler.k8s.client, "api_client", lambda *a, **k: object())
    monkeypatch.setattr(scheduler.k8s.daemon, "Daemon", _FakeDaemon)
    monkeypatch.setattr("reports.ledger.connect.probe", lambda _url: None)
    monkeypatch.setattr("scheduler.k8s.runtime.tune", lambda: None)
    monkeypatch.setattr("scheduler.k8s.runtime.freeze_startup_objects", lambda: None)
    monkeypatch.setattr(run_module, "_stop_on_signals", lambda _daemon: None)
    with pytest.raises(SystemExit) as stopped:
        main(["run", "--policy", str(policy), "--tokens", str(tmp_path / "missing.yaml")])
    assert stopped.value.code == 2
    assert "missing.yaml" in capsys.readouterr().err
    assert _FakeDaemon.last is not None
    assert _FakeDaemon.last.events[-1] == "stop"
