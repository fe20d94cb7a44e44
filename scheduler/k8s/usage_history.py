"""The daemon's usage history, kept in a ConfigMap so that a restart or a new leader goes
on from it instead of from nothing (docs/usage-history.md says why a ConfigMap).

`UsageKeeper` advances the history every cycle with the engine's own function
(`scheduler.engine.usage.advance_usage_history`), from the GPUs each member held since
the previous cycle; `UsageHistoryStore` reads and writes the ConfigMap. The leader writes
at most every `write_seconds` and once more on a clean stop; a daemon that starts, or
becomes leader, reads it and decays it from the instant it was valid at to now. What it
holds:

    data:
      usage-history.json: '{"validAt": "2026-11-29T22:41:07.123456Z",
                            "halfLifeSeconds": 604800.0,
                            "gpuSeconds": {"lab-a": 5123.4, "lab-b": 18.0}}'

`halfLifeSeconds` is the half-life the GPU-seconds were decayed with: a history decayed
with another half-life than the policy's is rescaled to it (`rescaled`). Without it (a
history written before it was kept), it is taken to be the policy's.

A history that does not parse (a hand edit gone wrong) is logged and the history starts
from nothing: a wrong history only tilts the split of the surplus, a crash would stop
scheduling. An object of that name holding anything besides `usage-history.json`
(another program's ConfigMap) is never written: the history stays in memory and the
error names the ConfigMap and the flag that chooses another name.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from policies.errors import InputError
from policies.model import Policy
from scheduler.engine.decisions import Decisions
from scheduler.engine.snapshot import Snapshot
from scheduler.engine.usage import advance_usage_history

log = logging.getLogger(__name__)

HISTORY_KEY = "usage-history.json"
HOUR_S = 3600.0
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


@dataclass(frozen=True, slots=True)
class StoredHistory:
    """Per-member decayed GPU-seconds, valid at `valid_at` (Unix seconds)."""

    valid_at: float
    gpu_seconds: Mapping[str, float] = field(default_factory=dict)
    half_life_s: float | None = None
    """The half-life they were decayed with; None when not known (written before it was
    kept)."""


def rescaled(
    history: Mapping[str, float], decayed_with: float, half_life_s: float
) -> dict[str, float]:
    """A usage history decayed with the half-life `decayed_with`, as one decayed with
    `half_life_s`. Each member's GPU-seconds are weighted `0.5 ** (age / half-life)`, so a
    constant allocation of G GPUs comes to `G * half-life / ln 2`: the engine reads the
    history back as a recent mean allocation that way (the nodes whose owner is likely to
    want them back), and what is added from now on is on the new scale. Not rescaled, a
    history of 8 GPUs held for days under a 1 h half-life read as 0.05 GPUs under 168 h,
    and weeks of new use were needed to outweigh it; rescaled, it is exact for a constant
    allocation (the past seconds themselves are not kept, so no better is known)."""
    factor = half_life_s / decayed_with
    return {member: seconds * factor for member, seconds in history.items()}


def encode(stored: StoredHistory) -> dict[str, str]:
    """The ConfigMap's `data`."""
    valid_at = datetime.fromtimestamp(stored.valid_at, UTC).strftime(_TIME_FORMAT)
    body: dict[str, Any] = {"validAt": valid_at}
    if stored.half_life_s is not None:
        body["halfLifeSeconds"] = stored.half_life_s
    body["gpuSeconds"] = dict(sorted(stored.gpu_seconds.items()))
    return {HISTORY_KEY: json.dumps(body, indent=1)}


def decode(data: Mapping[str, str] | None, where: str) -> StoredHistory:
    """Parse the ConfigMap's `data`; InputError naming the field when it is not ours."""
    text = (data or {}).get(HISTORY_KEY)
    if text is None:
        raise InputError(f"{where}: no key {HISTORY_KEY!r}")
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise InputError(f"{where}: {HISTORY_KEY} is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InputError(f"{where}: {HISTORY_KEY} must be an object")
    valid_at = body.get("validAt")
    if not isinstance(valid_at, str):
        raise InputError(f"{where}: validAt must be a time like 2026-11-29T22:41:07.123456Z")
    try:
        at = datetime.strptime(valid_at, _TIME_FORMAT).replace(tzinfo=UTC).timestamp()
    except ValueError as exc:
        raise InputError(f"{where}: validAt {valid_at!r}: {exc}") from exc
    half_life = _seconds(body.get("halfLifeSeconds"))
    if half_life is not None and not 0 < half_life < math.inf:
        raw = repr(body.get("halfLifeSeconds"))
        shown = raw if len(raw) <= 40 else f"{raw[:40]}…"
        raise InputError(f"{where}: halfLifeSeconds: {shown} is not a number of seconds > 0")
    usage = body.get("gpuSeconds")
    if not isinstance(usage, dict):
        raise InputError(f"{where}: gpuSeconds must map member names to GPU-seconds")
    out: dict[str, float] = {}
    for member, value in usage.items():
        seconds = _seconds(value)
        if seconds is None or not math.isfinite(seconds) or seconds < 0:
            shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:40]}…"
            raise InputError(f"{where}: gpuSeconds.{member}: {shown} is not GPU-seconds >= 0")
        out[str(member)] = seconds
    return StoredHistory(at, out, half_life)


def _seconds(value: object) -> float | None:
    """A JSON number as a float (an integer beyond any float: infinite, or it stopped
    every cycle); NaN for anything else, None when absent."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            return math.inf
    return math.nan


class StoreUnavailable(Exception):
    """The API server could not be asked (the caller retries later)."""


class UsageHistoryStore:
    """Reads and writes the usage history ConfigMap `namespace/name`."""

    def __init__(
        self, api: client.ApiClient, namespace: str, name: str, timeout: float = 5.0
    ) -> None:
        self._core = client.CoreV1Api(api)
        self.namespace = namespace
        self.name = name
        self.timeout = timeout
        self.foreign: str | None = None
        """Why the object of that name is not fairpool's to write (None: it is, or there is
        none)."""
        self._version: str | None = None
        """The object's resourceVersion this daemon last read or wrote (None: none seen,
        the next write creates it). Writes carry it, so a deposed leader's late write
        cannot overwrite what the new leader wrote after reading."""

    @property
    def where(self) -> str:
        return f"ConfigMap {self.namespace}/{self.name}"

    def load(self) -> StoredHistory | None:
        """The stored history; None when there is none or it is not ours (logged).
        Raises StoreUnavailable when the API server did not answer it."""
        try:
            obj = self._core.read_namespaced_config_map(
                self.name, self.namespace, _request_timeout=self.timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                log.info("no usage history yet in %s: starting from none", self.where)
                self._version, self.foreign = None, None
                return None
            raise StoreUnavailable(f"{self.where}: {exc.status} {exc.reason}") from exc
        except Exception as exc:  # connection refused, timeout
            raise StoreUnavailable(f"{self.where}: {exc}") from exc
        self._take(obj)
        if self.foreign is not None:
            log.error("%s", self.foreign)
            return None
        try:
            return decode(obj.data, self.where)
        except InputError as exc:
            log.error("usage history ignored, starting from none: %s", exc)
            return None

    def save(self, stored: StoredHistory) -> bool:
        """Write the history over the version last read or written (create the ConfigMap
        when there was none); False on failure (logged), the next write carries the newer
        history anyway. When someone else wrote in between (409), nothing is written and
        the next write goes over their version: only the leader writes, and a daemon
        leads only after reading, so the other write was a deposed leader's late one (or
        a hand edit), older than this daemon's history. Never over an object that is
        not a usage history (`foreign`)."""
        if self.foreign is not None:
            return False
        metadata: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "labels": {"app.kubernetes.io/name": "fairpool"},
        }
        if self._version is not None:
            metadata["resourceVersion"] = self._version
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata,
            "data": encode(stored),
        }
        try:
            if self._version is None:
                written = self._core.create_namespaced_config_map(
                    self.namespace,
                    body,  # type: ignore[arg-type]
                    _request_timeout=self.timeout,
                )
            else:
                written = self._core.replace_namespaced_config_map(
                    self.name,
                    self.namespace,
                    body,  # type: ignore[arg-type]
                    _request_timeout=self.timeout,
                )
        except ApiException as exc:
            if exc.status == 404:
                self._version = None  # deleted: the next write creates it
            elif exc.status == 409:
                self._refresh_version()
            log.warning(
                "usage history not written to %s: %s %s", self.where, exc.status, exc.reason
            )
            return False
        except Exception as exc:  # connection refused, timeout
            log.warning("usage history not written to %s: %s", self.where, exc)
            return False
        self._version = _version_of(written)
        return True

    def _refresh_version(self) -> None:
        """The object's current resourceVersion, after someone else wrote it."""
        try:
            obj = self._core.read_namespaced_config_map(
                self.name, self.namespace, _request_timeout=self.timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                self._version = None
            return
        except Exception:  # the next write fails on the old version and asks again
            return
        self._take(obj)
        if self.foreign is not None:
            log.error("%s", self.foreign)

    def _take(self, obj: client.V1ConfigMap) -> None:
        """The object read: its version, and whether it is a usage history at all. One
        holding other keys is another program's (a name shared by mistake): replaced,
        its data was lost. Only the history's key (what fairpool writes, or a hand edit
        of it), or nothing, is fairpool's to write over."""
        self._version = _version_of(obj)
        keys = sorted({*(obj.data or {}), *(obj.binary_data or {})} - {HISTORY_KEY})
        self.foreign = None
        if keys:
            shown = ", ".join(keys[:5]) + (", …" if len(keys) > 5 else "")
            self.foreign = (
                f"{self.where} holds data fairpool did not write (keys: {shown}): the usage "
                "history is kept in memory only and never written there; choose another "
                "name with --usage-history-configmap (the chart names it after the release)"
            )


def _version_of(obj: client.V1ConfigMap) -> str | None:
    return obj.metadata.resource_version if obj.metadata is not None else None


def bound_by_member(snapshot: Snapshot, decisions: Decisions) -> dict[str, int]:
    """GPUs per member of the pods `decisions` binds (pending pods of `snapshot`)."""
    gpus = {pod.uid: pod.spec.gpus for job in snapshot.pending for pod in job.pods}
    out: dict[str, int] = {}
    for bind in decisions.binds:
        out[bind.member] = out.get(bind.member, 0) + gpus.get(bind.pod_uid, 0)
    return out


def allocated_by_member(
    snapshot: Snapshot, bound: Mapping[str, int] | None = None
) -> dict[str, int]:
    """GPUs each member holds in `snapshot` (terminating pods still hold theirs), plus
    `bound`: GPUs the cycle on that snapshot just bound."""
    out: dict[str, int] = dict(bound or {})
    for pod in snapshot.running:
        if pod.member is not None:
            out[pod.member] = out.get(pod.member, 0) + pod.spec.gpus
    return out


class UsageKeeper:
    """The history one daemon passes to the engine, and its durable copy.

    Without a half-life in the policy nothing is kept (and the ConfigMap is left alone);
    when one is set again, the history is read anew, so an old allocation is never
    integrated over the time it was off.
    """

    def __init__(
        self,
        store: UsageHistoryStore | None,
        write_seconds: float = 30.0,
        retry_seconds: float = 5.0,
    ) -> None:
        self.store = store
        self.write_seconds = write_seconds
        self.retry_seconds = retry_seconds
        self.history: dict[str, float] = {}
        self.valid_at = 0.0
        self._held: dict[str, int] = {}
        self._half_life_s: float | None = None
        self._decayed_with: float | None = None
        """The half-life `history` was decayed with (None: not known, taken to be the
        policy's)."""
        self._loaded = False
        self._next_read = 0.0
        self._written_at = -math.inf
        self.writes = 0

    def reload(self) -> None:
        """Read the ConfigMap again before the next cycle (this daemon became leader: the
        old leader's history is the one that counted)."""
        self._loaded = False
        self._next_read = 0.0

    def advance(self, policy: Policy, now: float) -> dict[str, float]:
        """The history at `now` (for the snapshot): read first if needed, then decayed and
        added to with what each member held since the previous call."""
        hours = policy.sharing.usage_half_life_hours
        if hours is None:
            self._half_life_s = None
            self.reload()
            # No instant either: the allocation `held` keeps recording meanwhile starts
            # counting when the half-life is back, not from before it was switched off
            # (kept in memory, or with the ConfigMap unreadable then, it was integrated
            # over the whole time it was off).
            self.history, self._held, self.valid_at = {}, {}, 0.0
            return {}
        self._half_life_s = hours * HOUR_S
        if not self._loaded and now >= self._next_read:
            self._read(now)
        decayed_with = self._decayed_with
        if decayed_with is not None and decayed_with != self._half_life_s and self.history:
            log.info(
                "usage history rescaled from a half-life of %gs to %gs",
                decayed_with,
                self._half_life_s,
            )
            self.history = rescaled(self.history, decayed_with, self._half_life_s)
        self._decayed_with = self._half_life_s
        self.history = advance_usage_history(
            self.history, self._held, now - self.valid_at, self._half_life_s, policy.member_names()
        )
        self.valid_at = max(self.valid_at, now)
        return dict(self.history)

    def held(self, allocated: Mapping[str, int]) -> None:
        """GPUs per member from now until the next `advance`."""
        self._held = dict(allocated)

    def _read(self, now: float) -> None:
        if self.store is None:  # in memory only: this daemon's own history goes on
            self._loaded = True
            self.valid_at = self.valid_at or now
            return
        try:
            stored = self.store.load()
        except StoreUnavailable as exc:
            # Keep this daemon's own history meanwhile, and do not overwrite the stored
            # one with it until it has been read.
            log.warning("usage history not read, retrying in %gs: %s", self.retry_seconds, exc)
            self._next_read = now + self.retry_seconds
            if self.valid_at == 0.0:
                self.valid_at = now
            return
        self._loaded = True
        self._held = {}
        if stored is None:
            self.history, self.valid_at = {}, now
            return
        self._decayed_with = stored.half_life_s
        # Decayed from its instant to now by the next advance (nothing is added: no
        # allocation is known for that gap).
        self.history = dict(stored.gpu_seconds)
        self.valid_at = min(stored.valid_at, now)
        log.info(
            "usage history of %d member(s) read from %s, valid %.0fs ago",
            len(self.history),
            self.store.where,
            now - stored.valid_at,
        )

    def maybe_write(self, now: float, force: bool = False) -> bool:
        """Write the history if the last write is `write_seconds` old (or `force`), and it
        was read first. Only the leader calls this."""
        if self.store is None or self._half_life_s is None or not self._loaded:
            return False
        if not force and now - self._written_at < self.write_seconds:
            return False
        self._written_at = now
        stored = StoredHistory(self.valid_at, dict(self.history), self._half_life_s)
        if self.store.save(stored):
            self.writes += 1
            return True
        return False
