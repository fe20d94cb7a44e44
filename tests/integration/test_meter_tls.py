"""`fairpool meter` against a Prometheus served over https: its certificate is checked
(the usage it reads is billed), against the system's CAs or `--prometheus-ca`; only
`--prometheus-insecure` skips the check. It was never checked: whoever answered at the
address was billed from."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from policies.loader import DEFAULT_POLICY
from reports.ledger import Ledger
from scheduler.cli.main import main
from tests.integration import prometheus_fixtures as fixtures
from tests.integration.prometheus_fixtures import at
from tests.promtest import PrometheusServer
from tests.unit.test_api_tls import issue, make_ca

pytestmark = pytest.mark.integration

metering_scenario = fixtures.metering_scenario
metering_tsdb = fixtures.metering_tsdb

HOURS = ("--from", at(9).isoformat(), "--to", at(11).isoformat())


@pytest.fixture(scope="module")
def https_prometheus(
    metering_tsdb: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[PrometheusServer, Path]]:
    folder = tmp_path_factory.mktemp("prometheus-tls")
    ca, ca_cert, ca_key = make_ca(folder, "metering-ca")
    server = issue(folder, "prometheus", (ca_cert, ca_key), server=True)
    shutil.copytree(metering_tsdb, folder / "data")
    with PrometheusServer(folder / "data", tls=(server.cert, server.key)) as prometheus:
        yield prometheus, ca.cert


def meter(args: list[str], ledger: Path) -> int:
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "meter",
                "--ledger",
                f"sqlite:///{ledger}",
                "--policy",
                str(DEFAULT_POLICY),
                *HOURS,
                *args,
            ]
        )
        raise SystemExit(0)
    return int(exc.value.code or 0)


def metered_hours(ledger: Path) -> int:
    frame = Ledger(f"sqlite:///{ledger}").usage_frame(at(0), at(23))
    return len(set(frame["hour"])) if len(frame) else 0


def test_a_certificate_nobody_vouches_for_is_refused_naming_the_flag(
    https_prometheus: tuple[PrometheusServer, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    prometheus, _ = https_prometheus
    ledger = tmp_path / "ledger.db"
    assert meter(["--prometheus", prometheus.url], ledger) != 0
    err = capsys.readouterr().err
    assert prometheus.url in err and "certificate verify failed" in err, err
    assert "--prometheus-ca" in err
    assert metered_hours(ledger) == 0


def test_the_ca_given_checks_the_certificate(
    https_prometheus: tuple[PrometheusServer, Path], tmp_path: Path
) -> None:
    prometheus, ca = https_prometheus
    ledger = tmp_path / "ledger.db"
    assert meter(["--prometheus", prometheus.url, "--prometheus-ca", str(ca)], ledger) == 0
    assert metered_hours(ledger) == 2


def test_insecure_skips_the_check_only_when_asked(
    https_prometheus: tuple[PrometheusServer, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    prometheus, ca = https_prometheus
    ledger = tmp_path / "ledger.db"
    assert meter(["--prometheus", prometheus.url, "--prometheus-insecure"], ledger) == 0
    assert metered_hours(ledger) == 2
    both = ["--prometheus", prometheus.url, "--prometheus-insecure", "--prometheus-ca", str(ca)]
    assert meter(both, tmp_path / "other.db") == 2
    assert "--prometheus-ca: not with --prometheus-insecure" in capsys.readouterr().err
