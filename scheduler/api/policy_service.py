"""PolicyService: read, validate, dry-run, apply, list and watch policy versions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import grpc

from policies.errors import PolicyError
from policies.loader import parse_policy
from policies.model import Policy
from proto.fairpool.v1 import policy_pb2, policy_pb2_grpc
from scheduler.api import messages
from scheduler.api.auth import Authenticator, Principal, RoleKind
from scheduler.api.errors import abort, abort_input, check_deadline
from scheduler.api.policy_store import (
    AppliedNotRecorded,
    AuditUnavailable,
    PolicyStore,
    SourceRefused,
    StoredPolicyBroken,
    StoredVersion,
    VersionConflict,
    VersionsExhausted,
    member_version,
    policy_diff,
)
from scheduler.engine.decisions import MemberShare
from scheduler.engine.snapshot import Snapshot

if TYPE_CHECKING:
    # Only the daemon's view is read here: the API front, which imports this module for
    # `validate_policy`, starts without the Kubernetes client.
    from scheduler.k8s.daemon import SchedulerView

WATCH_POLL_SECONDS = 1.0
"""How often a watcher wakes up to notice a cancelled call or a passed deadline."""
MAX_COMMENT_CHARS = 4096
"""An ApplyPolicy comment says why; it is kept with every version and listed often."""
MAX_PAGE = 500
PAGE_BYTES = 8 << 20
"""ListPolicyVersions stops adding versions once their stored text passes this many
bytes (always returning at least one), so a page fits any client's message limit; the
caller asks for the rest with `before_version` set to the oldest version it got."""
MEMBER_VIEW_CHARS = 2 << 20
"""A member's page stops once the documents parsed for its views pass this many
characters (always returning one version), whether or not it asked for them: each view
is built from the parsed document, and parsing costs about a second per 10,000 members,
so 500 versions of a large policy held a worker (the daemon's interpreter) for minutes
per call. The size of the largest document: a page costs at most one ValidatePolicy."""


def share_changes(
    before: tuple[MemberShare, ...], after: tuple[MemberShare, ...]
) -> list[policy_pb2.ShareChange]:
    """Per member and GPU model, entitlement and fair share under two policies."""
    old = {(s.member, s.gpu_model): s for s in before}
    new = {(s.member, s.gpu_model): s for s in after}
    out = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        out.append(
            policy_pb2.ShareChange(
                member=key[0],
                gpu_model=key[1],
                entitlement_before=a.entitlement if a else 0,
                entitlement_after=b.entitlement if b else 0,
                fair_share_before=a.fair_share if a else 0.0,
                fair_share_after=b.fair_share if b else 0.0,
            )
        )
    return out


def parse_draft(text: str, context: grpc.ServicerContext) -> Policy:
    try:
        return parse_policy(text, "policy")
    except PolicyError as exc:
        abort_input(context, exc)


def validate_policy(
    request: policy_pb2.ValidatePolicyRequest, context: grpc.ServicerContext
) -> policy_pb2.ValidatePolicyResponse:
    """Needs nothing of the daemon's: the API front answers it too."""
    policy = parse_draft(request.yaml, context)
    return policy_pb2.ValidatePolicyResponse(
        members=policy.member_names(), gpu_models=[m.name for m in policy.spec.gpu_models]
    )


class PolicyServicer(policy_pb2_grpc.PolicyServiceServicer):
    def __init__(
        self,
        store: PolicyStore,
        view: SchedulerView,
        auth: Authenticator,
        compute_shares: Callable[..., tuple[MemberShare, ...]],
    ) -> None:
        self._store = store
        self._view = view
        self._auth = auth
        self._compute_shares = compute_shares

    def _readable(
        self, principal: Principal, entry: StoredVersion, with_document: bool = True
    ) -> policy_pb2.PolicyVersion:
        """A policy version as the caller may read it: a member sees the shared rules and
        its own entry, not the other members' (nor their changes in the diff, nor the
        free-text comment, which may speak of them)."""
        if principal.kind is RoleKind.MEMBER and principal.member is not None:
            previous = self._store.audit.get(entry.version - 1)
            entry = member_version(
                entry,
                principal.member,
                previous,
                self._store.parsed(entry),
                self._store.parsed(previous) if previous is not None else None,
            )
            return messages.policy_version(entry, with_document, principal.member)
        return messages.policy_version(entry, with_document)

    def GetPolicy(
        self, request: policy_pb2.GetPolicyRequest, context: grpc.ServicerContext
    ) -> policy_pb2.GetPolicyResponse:
        if request.version < 0:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "version: must be >= 0")
        if request.version == 0:
            entry, _ = self._store.current()
        else:
            found = self._store.audit.get(request.version)
            if found is None:
                abort(context, grpc.StatusCode.NOT_FOUND, f"no policy version {request.version}")
            entry = found
        principal = self._auth.caller(context)
        return policy_pb2.GetPolicyResponse(policy=self._readable(principal, entry))

    def ValidatePolicy(
        self, request: policy_pb2.ValidatePolicyRequest, context: grpc.ServicerContext
    ) -> policy_pb2.ValidatePolicyResponse:
        return validate_policy(request, context)

    def ApplyPolicy(
        self, request: policy_pb2.ApplyPolicyRequest, context: grpc.ServicerContext
    ) -> policy_pb2.ApplyPolicyResponse:
        if request.expected_version < 0:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "expected_version: must be >= 0")
        if len(request.comment) > MAX_COMMENT_CHARS:
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"comment: at most {MAX_COMMENT_CHARS:,} characters, got {len(request.comment):,}",
            )
        if "\x00" in request.comment:
            # PostgreSQL stores no NUL in text: the version would be applied but never
            # recorded, and every later apply refused until a restart.
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"comment: a NUL character (U+0000) at character "
                f"{request.comment.index(chr(0)) + 1}; it cannot be stored",
            )
        author = self._auth.caller(context).name
        draft = parse_draft(request.yaml, context)
        base, current = self._store.current()
        if request.expected_version and request.expected_version != base.version:
            abort(
                context,
                grpc.StatusCode.ABORTED,
                f"expected version {request.expected_version}, the current version is "
                f"{base.version}: get the policy again and reapply your change",
            )
        snapshot = self._view.snapshot()
        gaps = draft.price_gaps(n.gpu_model for n in snapshot.nodes if n.gpus > 0)
        if gaps:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, gaps)
        changes = share_changes(
            self._compute_shares(snapshot, current), self._compute_shares(snapshot, draft)
        )
        diff = policy_diff(current, draft, base.version, base.version + 1)
        response = policy_pb2.ApplyPolicyResponse(
            dry_run=request.dry_run, changes=changes, diff=diff, base_version=base.version
        )
        if request.dry_run:
            return response
        check_deadline(context, "storing the policy")
        try:
            entry = self._store.apply(
                draft, request.expected_version, author=author, comment=request.comment
            )
        except VersionConflict as exc:
            abort(context, grpc.StatusCode.ABORTED, f"{exc}: get the policy again and reapply")
        except (StoredPolicyBroken, VersionsExhausted, SourceRefused) as exc:
            abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except (AuditUnavailable, AppliedNotRecorded) as exc:
            # Both say whether the change is in force; neither needs an incident id.
            abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        response.applied.CopyFrom(messages.policy_version(entry))
        # The same document as the version in force: nothing was stored, nothing differs.
        response.diff = entry.diff if entry.version != base.version else ""
        if entry.version > base.version and (
            entry.version != base.version + 1 or entry.author != author
        ):
            # Another apply landed between the read above and the store's lock: the
            # answer is against the version that was in force when this one was stored.
            self._rebase(response, entry, author, draft, snapshot)
        return response

    def _rebase(
        self,
        response: policy_pb2.ApplyPolicyResponse,
        entry: StoredVersion,
        author: str,
        draft: Policy,
        snapshot: Snapshot,
    ) -> None:
        """Answer against the version before `entry` when this call stored it, else (the
        same document was applied by someone else first, nothing stored) against `entry`
        itself: "unchanged". Before, the second of two concurrent applies was answered
        against the version both had read, and was told "applied" for the first one's
        version, with its changes counted as its own."""
        if entry.author != author:
            response.base_version = entry.version
            response.diff = ""
            del response.changes[:]
            return
        response.base_version = entry.version - 1
        prior = self._store.audit.get(entry.version - 1)
        if prior is not None:
            changes = share_changes(
                self._compute_shares(snapshot, parse_policy(prior.document)),
                self._compute_shares(snapshot, draft),
            )
            del response.changes[:]
            response.changes.extend(changes)

    def ListPolicyVersions(
        self, request: policy_pb2.ListPolicyVersionsRequest, context: grpc.ServicerContext
    ) -> policy_pb2.ListPolicyVersionsResponse:
        if request.page_size < 0 or request.before_version < 0:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "page_size, before_version: >= 0")
        limit = min(request.page_size or 50, MAX_PAGE)
        entries = self._store.audit.list(limit=limit, before=request.before_version or None)
        principal = self._auth.caller(context)
        member_view = principal.kind is RoleKind.MEMBER
        page: list[StoredVersion] = []
        size = parsing = 0
        for entry in entries:
            # Sized on the stored text, before any member view is built: a member's view
            # is never bigger, and a page past the budget costs nothing.
            size += len(entry.diff) + len(entry.comment) + len(entry.author)
            size += 0 if request.omit_yaml else len(entry.document)
            parsing += len(entry.document) if member_view else 0
            if page and (size > PAGE_BYTES or parsing > MEMBER_VIEW_CHARS):
                break
            page.append(entry)
        return policy_pb2.ListPolicyVersionsResponse(
            versions=[self._readable(principal, e, not request.omit_yaml) for e in page]
        )

    def WatchPolicy(
        self, request: policy_pb2.WatchPolicyRequest, context: grpc.ServicerContext
    ) -> Iterator[policy_pb2.PolicyVersion]:
        if request.since_version < 0:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "since_version: must be >= 0")
        # A watcher holds a worker thread for as long as it watches: the guard bounds
        # watchers per identity and in total (scheduler/api/guard.py).
        # Notice a cancelled or timed-out call at once, not at the next poll.
        context.add_callback(self._store.wake)
        principal = self._auth.caller(context)
        current = self._store.current()[0].version
        if request.since_version > current:
            # Versions only grow: a watch from beyond the current one sent nothing until
            # the policy passed it, and skipped every version applied before then.
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"since_version: {request.since_version} is newer than the current version "
                f"{current} (0 watches from the current version)",
            )
        yield from self._watch(request.since_version, principal, context)

    def _watch(
        self, since: int, principal: Principal, context: grpc.ServicerContext
    ) -> Iterator[policy_pb2.PolicyVersion]:
        if since == 0:
            entry, _ = self._store.current()
            yield self._readable(principal, entry)
            since = entry.version
        tokens = self._auth.tokens
        generation = tokens.generation
        while context.is_active():
            if tokens.generation != generation:
                # The token file changed: a revoked token ends its open watches too
                # (UNAUTHENTICATED, or UNAVAILABLE while the file is broken).
                generation = tokens.generation
                if self._auth.caller(context) != principal:
                    abort(
                        context,
                        grpc.StatusCode.UNAUTHENTICATED,
                        "the token's role changed since the watch began: watch again",
                    )
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                abort(context, grpc.StatusCode.DEADLINE_EXCEEDED, "watch ended at its deadline")
            wait = WATCH_POLL_SECONDS if remaining is None else min(WATCH_POLL_SECONDS, remaining)
            for entry in self._store.wait_newer(since, wait):
                yield self._readable(principal, entry)
                since = entry.version
