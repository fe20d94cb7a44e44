"""The policy store: where the live policy is kept (a ConfigMap in a cluster, a file
outside one) and the audit log of every version (table `policy_versions` in the ledger
database).

A version number only ever grows. ApplyPolicy writes the source first, with the source's
own optimistic concurrency (the ConfigMap's resourceVersion, a lock and content check for a
file), then records the version; a change made to the source outside the API (GitOps, an
editor) is picked up by `refresh()` and recorded with origin "external".
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import fcntl
import hashlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import yaml
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from policies.loader import parse_policy
from policies.model import Policy
from reports.ledger.connect import open_engine
from reports.ledger.schema import policy_versions


class VersionConflict(Exception):
    """The policy changed since the version the caller based its change on."""


class Origin(StrEnum):
    BOOTSTRAP = "bootstrap"
    API = "api"
    EXTERNAL = "external"


@dataclass(frozen=True, slots=True)
class StoredVersion:
    version: int
    author: str
    applied_at: datetime
    origin: Origin
    comment: str
    document: str
    """The canonical policy YAML of this version (metadata.version set)."""
    diff: str
    """Unified diff from the previous version's document, the version line left out."""


def _document(policy: Policy, version: int | None) -> dict[str, Any]:
    data: dict[str, Any] = policy.model_dump(mode="json", by_alias=True, exclude_unset=True)
    metadata = data.setdefault("metadata", {})
    metadata.pop("version", None)
    if version is not None:
        metadata["version"] = version
    if not metadata:
        del data["metadata"]
    return data


def canonical_document(policy: Policy, version: int | None) -> str:
    """The policy as stored: what was set in the document, in schema order; the version in
    `metadata.version` (left out when None, for diffs)."""
    return yaml.safe_dump(_document(policy, version), sort_keys=False, allow_unicode=True)


def member_document(policy: Policy, member: str, version: int | None) -> str:
    """The policy as one member may read it: the shared rules (GPU models and prices,
    sharing, billing) and its own entry; other members' entries and fixed cost shares
    are left out."""
    data = _document(policy, version)
    spec = data["spec"]
    spec["members"] = [m for m in spec["members"] if m.get("name") == member]
    for cost in spec.get("billing", {}).get("sharedFixedCosts", []):
        if cost.get("shares"):
            cost["shares"] = {k: v for k, v in cost["shares"].items() if k == member}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def member_version(
    entry: StoredVersion, member: str, previous: StoredVersion | None
) -> StoredVersion:
    """`entry` as `member` may read it: its document and diff in the member's view."""
    policy = parse_policy(entry.document, f"policy version {entry.version}")
    after = member_document(policy, member, None).splitlines(keepends=True)
    before: list[str] = []
    if previous is not None:
        old = parse_policy(previous.document, f"policy version {previous.version}")
        before = member_document(old, member, None).splitlines(keepends=True)
    diff = "".join(
        difflib.unified_diff(
            before, after, f"version {entry.version - 1}", f"version {entry.version}"
        )
    )
    return dataclasses.replace(
        entry, document=member_document(policy, member, entry.version), diff=diff
    )


def policy_diff(old: Policy | None, new: Policy, old_version: int, new_version: int) -> str:
    before = canonical_document(old, None).splitlines(keepends=True) if old else []
    after = canonical_document(new, None).splitlines(keepends=True)
    return "".join(
        difflib.unified_diff(before, after, f"version {old_version}", f"version {new_version}")
    )


class AuditLog:
    """Every policy version with author, time and diff, in the ledger database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine = open_engine(url, create=True)

    def close(self) -> None:
        self._engine.dispose()

    def append(self, entry: StoredVersion) -> None:
        row = {
            "version": entry.version,
            "author": entry.author,
            "applied_at": entry.applied_at,
            "origin": str(entry.origin),
            "comment": entry.comment,
            "document": entry.document,
            "diff": entry.diff,
            "sha256": hashlib.sha256(entry.document.encode()).hexdigest(),
        }
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(policy_versions).values(**row))
        except IntegrityError as exc:
            raise VersionConflict(f"version {entry.version} is already recorded") from exc

    def latest(self) -> StoredVersion | None:
        found = self.list(limit=1)
        return found[0] if found else None

    def get(self, version: int) -> StoredVersion | None:
        query = select(policy_versions).where(policy_versions.c.version == version)
        with self._engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return _entry(row) if row is not None else None

    def list(
        self, limit: int = 50, before: int | None = None, after: int | None = None
    ) -> list[StoredVersion]:
        """Newest first, or oldest first when `after` is given (for watchers)."""
        query = select(policy_versions)
        if before is not None:
            query = query.where(policy_versions.c.version < before)
        if after is not None:
            query = query.where(policy_versions.c.version > after)
            query = query.order_by(policy_versions.c.version.asc())
        else:
            query = query.order_by(policy_versions.c.version.desc())
        with self._engine.connect() as conn:
            rows = conn.execute(query.limit(limit)).mappings().all()
        return [_entry(r) for r in rows]


def _entry(row: Any) -> StoredVersion:
    return StoredVersion(
        version=row["version"],
        author=row["author"],
        applied_at=row["applied_at"],
        origin=Origin(row["origin"]),
        comment=row["comment"],
        document=row["document"],
        diff=row["diff"],
    )


class PolicySource(Protocol):
    """Where the live policy document is kept. `revision` is an opaque token for
    optimistic concurrency: `write` fails with VersionConflict when the source changed
    since `read` returned it."""

    def read(self) -> tuple[str, str]: ...

    def write(self, text: str, revision: str) -> str: ...

    @property
    def name(self) -> str: ...


class FileSource:
    """The policy in a file; a sidecar lock file serializes writers across processes and
    the content hash is the revision. Written to a temp file and renamed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_path = path.with_name(f".{path.name}.lock")

    @property
    def name(self) -> str:
        return str(self.path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read(self) -> tuple[str, str]:
        text = self.path.read_text(encoding="utf-8")
        return text, hashlib.sha256(text.encode()).hexdigest()

    def write(self, text: str, revision: str) -> str:
        with self._locked():
            if self.path.exists() and self.read()[1] != revision:
                raise VersionConflict(f"{self.path} changed while the policy was applied")
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(text)
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        return hashlib.sha256(text.encode()).hexdigest()


class ConfigMapSource:
    """The policy in a ConfigMap key (the source of truth in a cluster, so GitOps works);
    replaced with its resourceVersion, so a concurrent writer gets a 409 -> conflict."""

    def __init__(self, core_v1: Any, namespace: str, name: str, key: str = "policy.yaml"):
        self._api = core_v1
        self.namespace = namespace
        self.config_map = name
        self.key = key

    @property
    def name(self) -> str:
        return f"configmap/{self.namespace}/{self.config_map}#{self.key}"

    def read(self) -> tuple[str, str]:
        cm = self._api.read_namespaced_config_map(self.config_map, self.namespace)
        data = cm.data or {}
        if self.key not in data:
            raise FileNotFoundError(f"{self.name}: no key {self.key!r}")
        return data[self.key], str(cm.metadata.resource_version)

    def write(self, text: str, revision: str) -> str:
        from kubernetes.client.exceptions import ApiException

        cm = self._api.read_namespaced_config_map(self.config_map, self.namespace)
        cm.metadata.resource_version = revision
        cm.data = {**(cm.data or {}), self.key: text}
        try:
            written = self._api.replace_namespaced_config_map(self.config_map, self.namespace, cm)
        except ApiException as exc:
            if exc.status == 409:
                raise VersionConflict(f"{self.name} changed while the policy was applied") from exc
            raise
        return str(written.metadata.resource_version)


class PolicyStore:
    """The current policy, its versions, and waiting for new ones."""

    def __init__(
        self,
        source: PolicySource,
        audit: AuditLog,
        on_change: Callable[[Policy], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.source = source
        self.audit = audit
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._current: StoredVersion
        self._policy: Policy
        self._revision = ""
        self.refresh()

    def current(self) -> tuple[StoredVersion, Policy]:
        with self._lock:
            return self._current, self._policy

    def refresh(self) -> bool:
        """Pick up a change made to the source outside the API; True when there was one."""
        with self._lock:
            text, revision = self.source.read()
            if revision == self._revision:
                return False
            policy = parse_policy(text, self.source.name)
            latest = self.audit.latest()
            if latest is not None:
                recorded = parse_policy(latest.document, f"policy version {latest.version}")
                if canonical_document(recorded, None) == canonical_document(policy, None):
                    self._set(latest, recorded, revision)
                    return False
            if latest is None:
                version, origin, old = max(policy.version, 1), Origin.BOOTSTRAP, None
            else:
                version, origin, old = latest.version + 1, Origin.EXTERNAL, recorded
            entry = self._record(policy, version, origin, f"source:{self.source.name}", "", old)
            self._set(entry, parse_policy(entry.document), revision)
            return True

    def _record(
        self,
        policy: Policy,
        version: int,
        origin: Origin,
        author: str,
        comment: str,
        old: Policy | None,
    ) -> StoredVersion:
        entry = StoredVersion(
            version=version,
            author=author,
            applied_at=self._clock(),
            origin=origin,
            comment=comment,
            document=canonical_document(policy, version),
            diff=policy_diff(old, policy, version - 1, version),
        )
        self.audit.append(entry)
        return entry

    def _set(self, entry: StoredVersion, policy: Policy, revision: str) -> None:
        changed = not hasattr(self, "_current") or entry.version != self._current.version
        self._current, self._policy, self._revision = entry, policy, revision
        if changed:
            self._changed.notify_all()
            if self._on_change is not None:
                self._on_change(policy)

    def apply(
        self, policy: Policy, expected_version: int, author: str, comment: str = ""
    ) -> StoredVersion:
        """Store `policy` as the next version. Raises VersionConflict when the current
        version is not `expected_version` (0 = any) or the source changed meanwhile."""
        with self._lock:
            self.refresh()
            base, old = self._current, self._policy
            if expected_version and expected_version != base.version:
                raise VersionConflict(
                    f"expected version {expected_version}, the current version is {base.version}"
                )
            version = base.version + 1
            document = canonical_document(policy, version)
            revision = self.source.write(document, self._revision)
            entry = StoredVersion(
                version=version,
                author=author,
                applied_at=self._clock(),
                origin=Origin.API,
                comment=comment,
                document=document,
                diff=policy_diff(old, policy, base.version, version),
            )
            self.audit.append(entry)
            self._set(entry, parse_policy(document), revision)
            return entry

    def policies(self) -> dict[int, Policy]:
        """Every recorded version (the latest 1,000), for billing usage metered under
        an older policy at that policy's prices."""
        return {
            e.version: parse_policy(e.document, f"policy version {e.version}")
            for e in self.audit.list(limit=1000)
        }

    def wake(self) -> None:
        """Wake every waiting watcher (one of them has been cancelled)."""
        with self._lock:
            self._changed.notify_all()

    def wait_newer(self, version: int, timeout: float) -> list[StoredVersion]:
        """Versions newer than `version`, oldest first; waits up to `timeout` for one."""
        with self._lock:
            if self._current.version <= version:
                self._changed.wait(timeout)
            if self._current.version <= version:
                return []
        return self.audit.list(limit=100, after=version)
