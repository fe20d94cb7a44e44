"""Reading Prometheus for metering: hourly series as tidy frames, raw counter samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from policies.errors import InputError
from reports.metering.remote_read import RawSeries, RemoteReadUndecodable, read_samples

HOUR = timedelta(hours=1)

# Prometheus refuses range queries with more points per series than this.
MAX_POINTS_PER_SERIES = 11_000

RETRY_BACKOFF_S = 1.0
"""urllib3's backoff factor between retries of one request: a Prometheus restarting or
briefly overloaded answers within the few seconds the retries span."""

RETRIES = 3
"""Retries of one request, PromQL query or remote read alike, after a connection error,
a timeout or an answer 408, 429, 500, 502, 503 or 504."""


class PrometheusUnavailable(RuntimeError):
    """Prometheus could not answer (unreachable, timed out, or failed the query)."""

    def __init__(self, message: str, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


def check_url(url: str, flag: str = "--prometheus") -> str:
    """`url` if it is an http(s) URL with a host, else an InputError naming `flag`."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        raise InputError(f"{flag}: {url!r} is not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(
            f"{flag}: {url!r} is not an http(s) URL with a host (e.g. http://prometheus:9090)"
        )
    if parts.query or parts.fragment:
        raise InputError(f"{flag}: {url!r}: the base URL takes no query or fragment")
    return url.rstrip("/")


class PromSource:
    """A Prometheus server answering metering queries."""

    def __init__(
        self,
        url: str,
        timeout: float = 120.0,
        retries: int = RETRIES,
        backoff: float | None = None,
        verify: bool | str = True,
    ) -> None:
        """`verify`: check an https Prometheus's certificate against the system's CAs
        (True), the CA bundle at this path, or not at all (False: a test server). Usage
        read from a server whose certificate nobody checked is billed."""
        self.url = url
        self.timeout = timeout
        self.verify = verify
        retry = Retry(
            total=retries,
            backoff_factor=RETRY_BACKOFF_S if backoff is None else backoff,
            status_forcelist=[408, 429, 500, 502, 503, 504],
            allowed_methods=["GET", "POST"],
        )
        session = requests.Session()
        session.verify = verify
        session.hooks["response"].append(self._refuse_partial)
        # PrometheusConnect mounts the retrying adapter on this session: the remote reads
        # go through it too, retried as the queries are (they were sent once, and one
        # 503 or reset connection left a whole chunk pending, or ended the run).
        self.client = PrometheusConnect(url=url, session=session, retry=retry)
        self.session = session

    def _refuse_partial(self, response: requests.Response, *_: object, **__: object) -> None:
        """An answer Prometheus gives with a warning that data is missing (a remote-read
        storage it could not reach, a partial response of a federating server) is
        PrometheusUnavailable: its hours stay pending. It was read as complete, and an
        hour whose data only that storage held was stored short, at full coverage.
        PromQL's own notes on a query ("PromQL warning: ...", "PromQL info: ...") are
        not about missing data."""
        if response.status_code != 200 or b'"warnings"' not in response.content:
            return
        try:
            warnings = response.json().get("warnings") or []
        except ValueError:
            return
        missing = [str(w) for w in warnings if not str(w).startswith("PromQL ")]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise PrometheusUnavailable(
                f"{self.url}: a partial answer, Prometheus warns: {_shorten(missing[0])}{more}"
            )

    def probe(self) -> None:
        """Raise PrometheusUnavailable (one line: the URL and the reason) unless a
        Prometheus answers at `url`; no retries, so a wrong URL fails fast."""
        endpoint = f"{self.url}/api/v1/status/buildinfo"
        try:
            response = requests.get(endpoint, timeout=min(self.timeout, 10.0), verify=self.verify)
        except requests.RequestException as exc:
            raise PrometheusUnavailable(f"{self.url}: {_short(exc)}", _unreachable(exc)) from None
        try:
            answer = response.json() if response.status_code == 200 else {}
        except ValueError:
            answer = {}
        if answer.get("status") != "success":
            raise PrometheusUnavailable(
                f"{self.url}: HTTP {response.status_code} from {endpoint}, "
                "not a Prometheus API (wrong URL?)"
            )

    def hourly(self, query: str, first_hour: datetime, last_hour: datetime) -> pd.DataFrame:
        """`query` evaluated at the end of each hour first_hour..last_hour (inclusive):
        one row per series and hour, label columns + `hour` (UTC start) + `value`."""
        points = int((last_hour - first_hour) / HOUR) + 1
        if points > MAX_POINTS_PER_SERIES:
            raise ValueError(f"{points} hours in one query; chunk the range")
        try:
            result = self.client.custom_query_range(
                query,
                start_time=first_hour + HOUR,
                end_time=last_hour + HOUR,
                step="3600",
                timeout=int(self.timeout),
            )
        except (requests.RequestException, PrometheusApiClientException) as exc:
            raise PrometheusUnavailable(f"{self.url}: {_short(exc)}", _unreachable(exc)) from exc
        return matrix_frame(result)

    def instant(self, query: str, at: datetime) -> pd.DataFrame:
        """An instant query at `at`: one row per series, label columns + `value`."""
        try:
            result = self.client.custom_query(
                query, params={"time": f"{at.timestamp():.3f}"}, timeout=int(self.timeout)
            )
        except (requests.RequestException, PrometheusApiClientException) as exc:
            raise PrometheusUnavailable(f"{self.url}: {_short(exc)}", _unreachable(exc)) from exc
        records = [{**item["metric"], "value": float(item["value"][1])} for item in result]
        if not records:
            return pd.DataFrame({"value": pd.Series([], dtype=float)})
        return pd.DataFrame.from_records(records)

    def any_series_before(self, selectors: list[str], end: datetime) -> bool:
        """Whether Prometheus holds any series matching one of `selectors` with a sample
        at or before `end` (series metadata only: cheap even over years)."""
        try:
            found = self.client.get_series(
                datetime(1970, 1, 1, tzinfo=UTC), end, params={"match[]": selectors}
            )
        except (requests.RequestException, PrometheusApiClientException) as exc:
            raise PrometheusUnavailable(f"{self.url}: {_short(exc)}", _unreachable(exc)) from exc
        return bool(found)

    def samples(self, metric: str, start_ms: int, end_ms: int) -> list[RawSeries]:
        """Every series of `metric` with its raw samples in [start_ms, end_ms], read with
        the remote-read API (`remote_read.RemoteReadUnsupported` if there is none).
        An answer that cannot be decoded is PrometheusUnavailable naming the endpoint:
        the hours stay pending, as for a failed query."""
        try:
            return read_samples(
                self.url, metric, start_ms, end_ms, self.timeout, session=self.session
            )
        except requests.RequestException as exc:
            raise PrometheusUnavailable(f"{self.url}: {_short(exc)}", _unreachable(exc)) from exc
        except RemoteReadUndecodable as exc:
            raise PrometheusUnavailable(str(exc)) from exc

    def raw(
        self, query: str, at: datetime
    ) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        """A range-vector instant query at `at`: each series' labels and raw samples."""
        try:
            result = self.client.custom_query(
                query, params={"time": f"{at.timestamp():.3f}"}, timeout=int(self.timeout)
            )
        except (requests.RequestException, PrometheusApiClientException) as exc:
            raise PrometheusUnavailable(f"{self.url}: {_short(exc)}", _unreachable(exc)) from exc
        return [
            (dict(item["metric"]), [(float(t), float(v)) for t, v in item.get("values", [])])
            for item in result
        ]


def matrix_frame(result: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per series and point: column by column (a dict per point costs more than
    the query), a label a series lacks is missing (NaN)."""
    labels: dict[str, list[str | None]] = {}
    times: list[float] = []
    values: list[float] = []
    for item in result:
        points = item["values"]
        for key in item["metric"]:
            if key not in labels:
                labels[key] = [None] * len(times)
        for key, column in labels.items():
            column.extend([item["metric"].get(key)] * len(points))
        times.extend(float(t) for t, _ in points)
        values.extend(float(v) for _, v in points)
    if not times:
        return pd.DataFrame({"hour": pd.Series([], dtype="datetime64[ns, UTC]"), "value": []})
    frame = pd.DataFrame({**labels, "value": values})
    frame["hour"] = pd.to_datetime(np.array(times) - 3600, unit="s", utc=True)
    return frame


def concat_answers(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The answers of consecutive spans as one (empty answers have no label columns)."""
    found = [f for f in frames if len(f)]
    if not found:
        return frames[0] if frames else pd.DataFrame({"value": pd.Series([], dtype=float)})
    return found[0] if len(found) == 1 else pd.concat(found, ignore_index=True)


def _unreachable(exc: BaseException) -> bool:
    return isinstance(exc, requests.ConnectionError) and not isinstance(exc, requests.Timeout)


def _shorten(text: str) -> str:
    return text if len(text) < 300 else text[:300] + "..."


def _short(exc: BaseException) -> str:
    """The reason without the (long) query URL that requests puts in its messages."""
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.SSLError):
        reason = "certificate verify failed" if "CERTIFICATE_VERIFY_FAILED" in str(exc) else ""
        return (
            f"TLS handshake failed{': ' + reason if reason else ''} (give the CA that signed "
            "its certificate with --prometheus-ca FILE)"
        )
    if isinstance(exc, requests.ConnectionError):
        return "cannot connect"
    text = str(exc)
    return text if len(text) < 300 else text[:300] + "..."


def utc_hour(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
