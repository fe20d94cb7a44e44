"""The policy store: where the live policy is kept (the `Policy` object or a ConfigMap in a
cluster, a file outside one), and how a version is recorded in the audit log
(`policy_audit`).

A version number only ever grows. ApplyPolicy writes the source first, with the source's
own optimistic concurrency (the object's or ConfigMap's resourceVersion, a lock and
content check for a file), then records the version; a change made to the source outside
the API (GitOps, an editor, `kubectl apply`) is picked up by `refresh()` (or handed in by
a watch to `take()`) and recorded with origin "external".
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import difflib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import yaml

from policies.crd import GROUP, PLURAL
from policies.crd import VERSION as CRD_VERSION
from policies.errors import FieldIssue, PolicyError
from policies.files import mode_of, sync_folder
from policies.kubectl import with_last_applied
from policies.loader import parse_policy
from policies.model import MAX_VERSION, Policy

if TYPE_CHECKING:
    from scheduler.api.policy_audit import AuditLog

log = logging.getLogger(__name__)


class VersionConflict(Exception):
    """The policy changed since the version the caller based its change on."""


class VersionsExhausted(Exception):
    """The next version would be beyond the largest a policy version can be (a document
    that started near it, `metadata.version`): nothing is written, since a version past
    it could be stored but never read back."""

    def __init__(self, latest: int) -> None:
        super().__init__(
            f"the policy is at version {latest}, the largest a policy version can be "
            f"({MAX_VERSION}): no later version can be recorded"
        )


def _next_version(latest: int) -> int:
    if latest >= MAX_VERSION:
        raise VersionsExhausted(latest)
    return latest + 1


class StoredPolicyBroken(Exception):
    """The policy source holds a document that cannot be read or is not a valid policy
    (edited by hand, a bad GitOps commit). The API keeps serving the last good version,
    and an admin repairs the source with ApplyPolicy without an expected version. The
    message names the problem, not where the source is kept on the server."""

    def __init__(self, problem: str, revision: str) -> None:
        self.revision = revision
        super().__init__(
            f"the stored policy is broken ({problem}); the last good version stays in "
            "force. Repair it with ApplyPolicy (an admin, with a valid document and no "
            "expected version)"
        )


class AuditUnavailable(Exception):
    """The audit history's database did not answer before anything was written: the
    change was not made."""

    def __init__(self, why: str) -> None:
        super().__init__(
            f"the policy audit history does not answer ({why}); nothing was changed: "
            "apply again once it answers"
        )


class AppliedNotRecorded(Exception):
    """The policy was written to its source and is in force, but the audit history
    failed to record it. The store keeps the version and records it, in its author's
    name, as soon as the database answers (`record_unrecorded`)."""

    def __init__(self, entry: StoredVersion, cause: Exception) -> None:
        super().__init__(
            f"version {entry.version} is in force, but the policy audit history failed to "
            f"record it ({type(cause).__name__}); it is recorded in your name as soon as "
            "the database answers: do not apply it again"
        )


class SourceRefused(Exception):
    """The policy's source refused the write (the API server: a field its Policy CRD
    does not declare, a value its schema refuses, no right to write): nothing was
    changed."""

    def __init__(self, source: str, why: str) -> None:
        hint = ""
        if "unknown field" in why:
            hint = (
                ": its CRD is older than fairpool's, upgrade it with `kubectl apply "
                "--server-side --force-conflicts -f deploy/helm/fairpool/crds/` (docs/install.md)"
            )
        super().__init__(f"{source} refused the policy ({why}){hint}; nothing was changed")


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


def same_policy(one: Policy, other: Policy) -> bool:
    """Whether two policies say the same, however written: a default given explicitly
    (`weight: 1.0`) or a price written `"2.4"` instead of `"2.40"` changes nothing, so it
    makes no new version (each such apply recorded one, with an empty share change)."""

    def meaning(policy: Policy) -> dict[str, Any]:
        return policy.model_dump(exclude={"metadata": {"version"}})

    return meaning(one) == meaning(other)


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
    entry: StoredVersion,
    member: str,
    previous: StoredVersion | None,
    policy: Policy | None = None,
    old: Policy | None = None,
) -> StoredVersion:
    """`entry` as `member` may read it: its document and diff in the member's view, and
    no comment (free text about a change may speak of other members). `policy` and
    `old` are the parsed documents of `entry` and `previous` when the caller has them."""
    if policy is None:
        policy = parse_policy(entry.document, f"policy version {entry.version}")
    after = member_document(policy, member, None).splitlines(keepends=True)
    before: list[str] = []
    if previous is not None:
        if old is None:
            old = parse_policy(previous.document, f"policy version {previous.version}")
        before = member_document(old, member, None).splitlines(keepends=True)
    diff = "".join(
        difflib.unified_diff(
            before, after, f"version {entry.version - 1}", f"version {entry.version}"
        )
    )
    return dataclasses.replace(
        entry, document=member_document(policy, member, entry.version), diff=diff, comment=""
    )


def policy_diff(old: Policy | None, new: Policy, old_version: int, new_version: int) -> str:
    before = canonical_document(old, None).splitlines(keepends=True) if old else []
    after = canonical_document(new, None).splitlines(keepends=True)
    return "".join(
        difflib.unified_diff(before, after, f"version {old_version}", f"version {new_version}")
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
        raw = self.path.read_bytes()
        return raw.decode("utf-8"), hashlib.sha256(raw).hexdigest()

    def raw_revision(self) -> str:
        """The revision of the file's bytes, whether or not they are UTF-8 text: what an
        ApplyPolicy that repairs a file that is not text must name."""
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def write(self, text: str, revision: str) -> str:
        with self._locked():
            # The bytes' revision: a file that is not UTF-8 text is repaired too (reading
            # it as text failed with INTERNAL).
            if self.path.exists() and self.raw_revision() != revision:
                # Callers see this message: it says what happened, not where the file is.
                raise VersionConflict("the stored policy changed while it was applied")
            mode = mode_of(self.path)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            try:
                # mkstemp makes the file 0600: keep the mode the file had (or a new
                # file's usual mode), so readers such as the daemon can still read it.
                os.fchmod(fd, mode)
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(text)
                    # On disk before it replaces the file, and the rename on disk before
                    # the audit row is committed: after a power loss the file came back
                    # empty (the next start failed) or old (recorded as an outside
                    # change, silently undoing the applied version).
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, self.path)
                sync_folder(self.path.parent)
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
                raise VersionConflict("the stored policy changed while it was applied") from exc
            if exc.status is not None and 400 <= exc.status < 500:
                # A policy a ConfigMap cannot hold (more than 1 MiB), no right to write:
                # was answered INTERNAL.
                raise SourceRefused(self.name, _api_reason(exc)) from exc
            raise
        return str(written.metadata.resource_version)


class PolicyObjectSource:
    """The policy as the cluster-scoped `Policy` object (policies.fairpool.io): its spec is
    the policy's spec, its name the policy's name, its resourceVersion the revision, so
    a concurrent writer (`kubectl apply`, another API replica) gets a 409 -> conflict.
    The version number is not in the object: the audit history keeps it and the daemon
    writes the one in force to the object's status."""

    def __init__(self, custom_objects: Any, name: str) -> None:
        self._api = custom_objects
        self.policy_name = name

    @property
    def name(self) -> str:
        return f"policy/{self.policy_name}"

    def _get(self) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            obj: dict[str, Any] = self._api.get_cluster_custom_object(
                GROUP, CRD_VERSION, PLURAL, self.policy_name
            )
        except ApiException as exc:
            if exc.status == 404:
                raise FileNotFoundError(f"{self.name}: no such Policy object") from exc
            raise
        return obj

    def read(self) -> tuple[str, str]:
        return object_document(self._get())

    def write(self, text: str, revision: str) -> str:
        from kubernetes.client.exceptions import ApiException

        document = yaml.safe_load(text)
        obj = self._get()
        obj["metadata"]["resourceVersion"] = revision
        obj["spec"] = document["spec"]
        with_last_applied(obj, document["spec"])
        obj.pop("status", None)  # the status subresource is the daemon's
        try:
            # Strict: a CRD older than this daemon (Helm never upgrades CRDs) pruned a
            # field it does not declare without a word, so ApplyPolicy answered OK with
            # a version the object no longer held, undone at the next restart.
            written = self._api.replace_cluster_custom_object(
                GROUP, CRD_VERSION, PLURAL, self.policy_name, obj, field_validation="Strict"
            )
        except ApiException as exc:
            if exc.status == 409:
                raise VersionConflict(f"{self.name} changed while the policy was applied") from exc
            if exc.status is not None and 400 <= exc.status < 500:
                raise SourceRefused(self.name, _api_reason(exc)) from exc
            raise
        return str(written["metadata"]["resourceVersion"])


def _api_reason(exc: Any) -> str:
    """The API server's message of a refused request (its Status body), else its reason."""
    try:
        message = json.loads(exc.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or f"{exc.status} {exc.reason}")[:1000]


def object_document(obj: Mapping[str, Any]) -> tuple[str, str]:
    """A Policy object (as the API server serves it) -> (policy YAML, resourceVersion)."""
    meta = obj.get("metadata") or {}
    document = {
        "apiVersion": obj.get("apiVersion", f"{GROUP}/{CRD_VERSION}"),
        "kind": obj.get("kind", "Policy"),
        "metadata": {"name": meta.get("name", "")},
        "spec": obj.get("spec"),
    }
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    return text, str(meta.get("resourceVersion", ""))


def _named(policy: Policy, name: str | None) -> Policy:
    """`policy` named `name` (an object source's name wins over the document's)."""
    if name is None or (
        policy.metadata.name == name and "name" in policy.metadata.model_fields_set
    ):
        return policy
    return policy.model_copy(update={"metadata": policy.metadata.model_copy(update={"name": name})})


CLAIM_WINDOW = timedelta(minutes=2)
"""How long after recording an outside change a store looks for its claim: a claim comes
within the ApplyPolicy call that wrote it (seconds), and a version set by GitOps or
kubectl, never claimed, should not cost a query at every refresh for ever."""

PARSED_CHARS = 64 << 20
"""Document text behind the parsed policies a store keeps (a few hundred MB of objects
at most); typical policies are a few KB, so every version stays parsed."""


def _first_issues(error: PolicyError, count: int = 3) -> str:
    shown = "; ".join(str(i) for i in error.issues[:count])
    more = len(error.issues) - count
    return shown + (f"; and {more} more" if more > 0 else "")


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
        self._parsed: collections.OrderedDict[int, Policy] = collections.OrderedDict()
        self._parsed_chars = 0
        self._parsed_sizes: dict[int, int] = {}
        self._unrecorded: StoredVersion | None = None
        """A version applied and in force that the audit history failed to record."""
        self.refresh()

    def current(self) -> tuple[StoredVersion, Policy]:
        with self._lock:
            return self._current, self._policy

    def refresh(self) -> bool:
        """Pick up a change made to the source outside the API; True when there was one."""
        with self._lock:
            text, revision = self._read_source()
            try:
                return self.take(text, revision)
            except PolicyError as exc:
                if not hasattr(self, "_current"):
                    # At start there is nothing to serve: say exactly where and what.
                    raise PolicyError(self.source.name, exc.issues) from exc
                raise StoredPolicyBroken(_first_issues(exc), revision) from exc

    def take(self, text: str, revision: str) -> bool:
        """Take `text` at `revision` of the source (read by the caller, e.g. from a watch
        event): a new external version when it differs from the latest recorded one; True
        when the policy in force changed. Raises PolicyError (nothing changes) when the
        text is not a valid policy."""
        with self._lock:
            self.upkeep()
            if revision == self._revision:
                return False
            policy = parse_policy(text, self.source.name)
            for _attempt in range(3):
                latest = self.audit.latest()
                recorded = None
                if latest is not None:
                    try:
                        recorded = parse_policy(latest.document, f"policy version {latest.version}")
                    except PolicyError:
                        # Recorded by an earlier fairpool that took what this one refuses:
                        # the source's valid policy is a new version. Its error, raised
                        # here, was reported as the source's and nothing could be taken.
                        recorded = None
                    else:
                        if same_policy(recorded, policy):
                            self._set(latest, recorded, revision)
                            return False
                if latest is None:
                    version, origin = max(policy.version, 1), Origin.BOOTSTRAP
                else:
                    try:
                        version, origin = _next_version(latest.version), Origin.EXTERNAL
                    except VersionsExhausted as exc:
                        raise PolicyError(
                            self.source.name, [FieldIssue("metadata.version", str(exc))]
                        ) from exc
                author = f"source:{_public_name(self.source)}"
                try:
                    entry = self._record(policy, version, origin, author, "", recorded)
                except VersionConflict:
                    # Another replica recorded this change first: match it on the next turn.
                    continue
                self._set(entry, parse_policy(entry.document), revision)
                return True
            raise VersionConflict(f"{self.source.name}: the audit history keeps changing")

    def _read_source(self) -> tuple[str, str]:
        try:
            return self.source.read()
        except (OSError, UnicodeDecodeError) as exc:
            if not hasattr(self, "_current"):
                raise
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            revision = ""
            if isinstance(exc, UnicodeDecodeError) and isinstance(self.source, FileSource):
                revision = self.source.raw_revision()  # repaired by an apply naming it
            raise StoredPolicyBroken(f"cannot read it: {reason}", revision) from exc

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
        """Store `policy` as the next version; a policy identical to the one in force
        stores nothing and returns the current version (as `kubectl apply` leaves an
        unchanged object: a GitOps loop re-applying its file made an empty version, a
        reload and a version change in the month's report each time). Raises
        VersionConflict when the current version is not `expected_version` (0 = any) or
        the source changed meanwhile."""
        with self._lock:
            source_revision = None
            try:
                self.refresh()
            except StoredPolicyBroken as broken:
                # A broken source can only be replaced outright: a change based on a
                # version is refused, so nobody overwrites what they have not seen.
                if expected_version:
                    raise
                source_revision = broken.revision
            base, old = self._current, self._policy
            if expected_version and expected_version != base.version:
                raise VersionConflict(
                    f"expected version {expected_version}, the current version is {base.version}"
                )
            version = _next_version(base.version)
            policy = _named(policy, getattr(self.source, "policy_name", None))
            if source_revision is None and same_policy(policy, old):
                return base
            document = canonical_document(policy, version)
            # Read back before anything is written: what is stored must load again (the
            # source at the next start, the history), or the change would be half made.
            stored = parse_policy(document)
            if self._unrecorded is not None:
                raise AuditUnavailable(f"version {self._unrecorded.version} is not recorded yet")
            try:
                # The database answers before the source is written: a change it then
                # could not record would be in force with nobody's name on it.
                self.audit.latest()
            except Exception as exc:
                raise AuditUnavailable(type(exc).__name__) from exc
            revision = self.source.write(
                document, self._revision if source_revision is None else source_revision
            )
            entry = StoredVersion(
                version=version,
                author=author,
                applied_at=self._clock(),
                origin=Origin.API,
                comment=comment,
                document=document,
                diff=policy_diff(old, policy, base.version, version),
            )
            try:
                self.audit.append(entry)
            except VersionConflict:
                # The write landed, but another replica read the source in between and
                # recorded it as an outside change first: the version is this caller's.
                claimed = self._claim(entry, policy)
                if claimed is None:
                    raise
                entry = claimed
            except Exception as exc:
                # The database failed between its answer above and this insert: the
                # change is in force, so it is served, and recorded once it answers.
                self._set(entry, stored, revision)
                self._unrecorded = entry
                log.error("policy version %d applied but not recorded: %s", version, exc)
                raise AppliedNotRecorded(entry, exc) from exc
            self._set(entry, stored, revision)
            return entry

    def upkeep(self) -> None:
        """What a refresh does besides reading the source: record what this store applied
        but the audit history failed to record (numbering a later change needs it), and
        follow a claim of the outside change in force (`_follow_claim`)."""
        with self._lock:
            if self.record_unrecorded():
                self._follow_claim()

    def _follow_claim(self) -> None:
        """The version in force was recorded here as an outside change; the replica whose
        ApplyPolicy wrote it may have claimed it since (`_claim`): serve it with that
        caller as author, as the audit history says."""
        current = getattr(self, "_current", None)  # none yet while the store starts
        if current is None or current.origin != Origin.EXTERNAL:
            return
        if self._clock() - current.applied_at > CLAIM_WINDOW:
            return
        try:
            recorded = self.audit.get(current.version)
        except Exception as exc:  # the database is down: the next refresh asks again
            log.debug("cannot read policy version %d: %s", current.version, exc)
            return
        if (
            recorded is not None
            and recorded.origin == Origin.API
            and recorded.document == current.document
        ):
            self._current = recorded

    def record_unrecorded(self) -> bool:
        """Record the version an apply put in force but the audit history failed to
        record (`AppliedNotRecorded`); True when nothing is left to record."""
        with self._lock:
            entry = self._unrecorded
            if entry is None:
                return True
            try:
                self.audit.append(entry)
            except VersionConflict:
                # Another replica saw the source first and recorded it as an outside
                # change: claimed in the author's name, as a racing apply is.
                claimed = self._claim(entry, parse_policy(entry.document))
                if claimed is None:
                    log.warning(
                        "policy version %d applied here was overtaken before it was "
                        "recorded; the audit history keeps the other change",
                        entry.version,
                    )
                    self._revision = ""  # read the source again at the next refresh
                else:
                    self._current = claimed
            except Exception as exc:
                log.warning("policy version %d still not recorded: %s", entry.version, exc)
                return False
            self._unrecorded = None
            log.info("policy version %d recorded in the audit history", entry.version)
            return True

    def _claim(self, entry: StoredVersion, policy: Policy) -> StoredVersion | None:
        """`entry`'s version as recorded by another replica, now in `entry`'s name; None
        when that version holds something else (then the write was overtaken)."""
        recorded = self.audit.get(entry.version)
        if recorded is None or recorded.origin != Origin.EXTERNAL:
            return None
        seen = parse_policy(recorded.document, f"policy version {recorded.version}")
        if not same_policy(seen, policy):
            return None
        if not self.audit.claim(entry, recorded):
            return None
        return dataclasses.replace(
            recorded, author=entry.author, origin=entry.origin, comment=entry.comment
        )

    def parsed(self, entry: StoredVersion) -> Policy:
        """The policy of a recorded version, parsed once: a version never changes, so
        the parsed policies are kept (the most recent ones, up to PARSED_CHARS of
        document text)."""
        with self._lock:
            found = self._parsed.get(entry.version)
            if found is not None:
                self._parsed.move_to_end(entry.version)
                return found
        policy = parse_policy(entry.document, f"policy version {entry.version}")
        with self._lock:
            if entry.version not in self._parsed:
                self._parsed[entry.version] = policy
                self._parsed_sizes[entry.version] = len(entry.document)
                self._parsed_chars += len(entry.document)
            while self._parsed_chars > PARSED_CHARS and len(self._parsed) > 1:
                version, _ = self._parsed.popitem(last=False)
                self._parsed_chars -= self._parsed_sizes.pop(version)
        return policy

    def policies(self) -> dict[int, Policy]:
        """Every recorded version (the latest 1,000), for billing usage metered under
        an older policy at that policy's prices; each parsed once (see `parsed`). A
        version this fairpool no longer takes (recorded by an earlier one) is left out:
        the report names it where it governed an hour, and GetReport failed for every
        month."""
        found: dict[int, Policy] = {}
        for entry in self.audit.list(limit=1000):
            try:
                found[entry.version] = self.parsed(entry)
            except PolicyError:
                continue
        return found

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


MAX_AUTHOR_CHARS = 253
"""What the audit history's author column holds."""


def _public_name(source: PolicySource) -> str:
    """The source as every caller may read it (the author of an outside change): a
    file by its name alone, since the API never names the server's paths. Cut to fit
    the author column with `source:` before it: a file name of 250 characters, or a
    Policy object's of 253, was too long for PostgreSQL, and the store never started."""
    name = f"file/{source.path.name}" if isinstance(source, FileSource) else source.name
    room = MAX_AUTHOR_CHARS - len("source:")
    return name if len(name) <= room else name[: room - 1] + "…"
