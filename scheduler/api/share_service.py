"""ShareService: live shares, the queue, why jobs wait, and what-if simulations, each
scoped to what the caller may see."""

from __future__ import annotations

import json
import logging
import math
import secrets
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import grpc

from policies.errors import InputError, PolicyError
from policies.inventory import parse_inventory
from policies.loader import parse_policy
from policies.model import Policy
from proto.fairpool.v1 import share_pb2, share_pb2_grpc
from scheduler.api import messages
from scheduler.api.auth import Authenticator, refuse_unknown_member
from scheduler.api.errors import TRACE_FIELD, abort, abort_input, check_deadline
from scheduler.api.pending_queue import (
    QueueIndex,
    caller_scope,
    explain_pending,
    list_pending,
)
from scheduler.engine.decisions import PREEMPTION_CAUSES, MemberShare
from scheduler.engine.entitlement import capacity as model_capacity
from scheduler.engine.snapshot import Snapshot
from scheduler.k8s.published import Published, Rejected
from scheduler.sim.simulator import MAX_BATCH_S
from scheduler.traces.csv import read_trace_text

if TYPE_CHECKING:
    # The API front imports this module for its answers (`Book`, `entitlements_response`)
    # in a process of its own: the ledger's database libraries, pandas and the Kubernetes
    # client would be about a second of every front start (and restart) for nothing.
    from reports.ledger import Ledger
    from scheduler.api.whatif import WhatIf
    from scheduler.k8s.daemon import SchedulerView

log = logging.getLogger(__name__)

MAX_LEDGER_DAYS = 62


class Book:
    """What one publication answers under one policy, built once and shared by readers.

    Only the shares are computed when a book is made: the index of the pending queue
    (a sort of every pending job) is built by the first call that needs it, and each
    GetEntitlements answer is serialized once per scope and kept, so GetEntitlements
    costs a dictionary look-up however long the queue."""

    __slots__ = (
        "_answers",
        "_bound",
        "_index",
        "capacity",
        "gpu_models",
        "indexing",
        "members",
        "policy",
        "published",
        "shares",
    )

    def __init__(
        self, published: Published, policy: Policy, shares: tuple[MemberShare, ...]
    ) -> None:
        self.published = published
        self.policy = policy
        """The policy in use; newer than `published.policy` between an ApplyPolicy and
        the next cycle, and then the shares are computed for it."""
        self.shares = shares
        self.members = tuple(policy.member_names())
        self.capacity = model_capacity(published.snapshot.nodes)
        """Ready GPUs per model, unowned nodes' included: the pool's size."""
        self.gpu_models = known_gpu_models(policy, shares, self.capacity)
        self._index: QueueIndex | None = None
        self._bound: dict[str, list[str]] | None = None
        self._answers: dict[tuple[str | None, str], bytes] = {}
        self.indexing = threading.Lock()

    @property
    def snapshot(self) -> Snapshot:
        return self.published.snapshot

    @property
    def explanations(self) -> Mapping[str, str]:
        return self.published.decisions.explanations

    @property
    def now(self) -> float:
        return self.published.snapshot.now

    @property
    def rejected(self) -> tuple[Rejected, ...]:
        return self.published.rejected

    def bound(self, job_id: str) -> list[str]:
        """The nodes the cycle bound the job's pods to (none: it was not bound). A
        published snapshot still holds the jobs its cycle bound as pending."""
        if self._bound is None:
            found: dict[str, list[str]] = {}
            for bind in self.published.decisions.binds:
                found.setdefault(bind.job_id, []).append(bind.node)
            self._bound = found
        return self._bound.get(job_id, [])

    @property
    def index(self) -> QueueIndex:
        """The pending queue indexed (built by `PublishedShares.indexed`)."""
        assert self._index is not None, "take the book from PublishedShares.indexed()"
        return self._index

    def share_index_of(self, other: Book) -> None:
        """Reuse `other`'s index (same publication, another policy)."""
        if other.published is self.published:
            self._index = other._index

    def entitlements(
        self, member: str | None, gpu_model: str, policy_version: Callable[[], int]
    ) -> bytes:
        """The serialized GetEntitlementsResponse for one scope (a member or everyone,
        a GPU model or all), built at its first request and then served as it is.
        `policy_version` is asked only when the policy carries no version of its own."""
        key = (member, gpu_model)
        answer = self._answers.get(key)
        if answer is None:
            answer = entitlements_response(
                self.shares,
                member,
                gpu_model,
                self.policy.version or policy_version(),
                self.snapshot.now,
                self.capacity,
            ).SerializeToString()
            # Only scopes that exist are kept (members of the policy, GPU models with
            # shares), so names made up by callers cannot fill the book.
            if (member is None or member in self.members) and (
                not gpu_model or any(s.gpu_model == gpu_model for s in self.shares)
            ):
                self._answers[key] = answer
        return answer


def known_gpu_models(
    policy: Policy, shares: tuple[MemberShare, ...], capacity: Mapping[str, int]
) -> frozenset[str]:
    """The GPU models a caller may ask about: priced by the policy, or on the cluster's
    nodes, or in a share."""
    return frozenset(
        {m.name for m in policy.spec.gpu_models} | set(capacity) | {s.gpu_model for s in shares}
    )


def not_a_gpu_model(gpu_model: str, policy_version: int) -> str:
    """Why a GetEntitlements' `gpu_model` is refused (a misspelt model read as one nobody
    holds or is entitled to, an empty table with status OK)."""
    return (
        f"gpu_model: {gpu_model!r} is neither a GPU model of policy version "
        f"{policy_version} nor one of the cluster's nodes"
    )


def entitlements_response(
    shares: tuple[MemberShare, ...],
    member: str | None,
    gpu_model: str,
    policy_version: int,
    now: float,
    capacity: Mapping[str, int],
) -> share_pb2.GetEntitlementsResponse:
    rows = [
        messages.member_share(s)
        for s in shares
        if (member is None or s.member == member) and (not gpu_model or s.gpu_model == gpu_model)
    ]
    pool = [
        p
        for p in messages.pool_summaries(shares, capacity)
        if not gpu_model or p.gpu_model == gpu_model
    ]
    response = share_pb2.GetEntitlementsResponse(
        policy_version=policy_version, shares=rows, pool=pool
    )
    if now > 1e9:  # epoch seconds, not simulated seconds
        response.snapshot_time.CopyFrom(messages.timestamp(datetime.fromtimestamp(now, UTC)))
    return response


class PublishedShares:
    """The read side of the API: answers come from what the latest scheduling cycle
    published (`SchedulerView.published()`), one book per publication and policy.

    No reader runs the engine or waits for a cycle: the shares are the cycle's own
    (`Decisions.shares`); only a policy applied since the last cycle has its shares
    computed here, once. While one reader builds or indexes a new publication's book,
    the others answer from the previous one rather than queue behind it."""

    def __init__(
        self,
        view: SchedulerView,
        compute_shares: Callable[[Snapshot, Policy], tuple[MemberShare, ...]],
    ) -> None:
        self._view = view
        self._compute = compute_shares
        self._lock = threading.Lock()
        self._book: Book | None = None
        self._indexed: Book | None = None
        self.builds = 0
        """Books built so far (one per publication read, plus one per policy change)."""

    def current(self) -> Book:
        published, policy = self._view.published(), self._view.policy()
        book = self._book
        if book is not None and book.published is published and book.policy is policy:
            return book
        if book is not None and book.policy is policy:
            # Only a new cycle was published: whoever is indexing it, the others answer
            # from the previous cycle's book. A new policy is never served stale:
            # whoever applied it reads its effect.
            if not self._lock.acquire(blocking=False):
                return book
        else:
            self._lock.acquire()
        try:
            book = self._book
            if book is None or book.published is not published or book.policy is not policy:
                book = self._build(published, policy, book)
                self._book = book
            return book
        finally:
            self._lock.release()

    def indexed(self) -> Book:
        """The current book with its pending queue indexed (ListPending, ExplainPending).
        While one reader indexes a new publication, the others answer from the last
        indexed book of the same policy rather than queue behind it."""
        book = self.current()
        if book._index is not None:
            return book
        last = self._indexed
        if last is not None and last.policy is book.policy:
            if not book.indexing.acquire(blocking=False):
                return last
        else:
            book.indexing.acquire()
        try:
            if book._index is None:
                book._index = QueueIndex.of(book.snapshot.pending)
            self._indexed = book
            return book
        finally:
            book.indexing.release()

    def _build(self, published: Published, policy: Policy, previous: Book | None) -> Book:
        self.builds += 1
        if published.policy is policy and (
            published.decisions.shares or not published.snapshot.nodes
        ):
            shares = published.decisions.shares
        else:
            shares = self._compute(published.snapshot, policy)
        book = Book(published, policy, shares)
        if previous is not None:
            book.share_index_of(previous)
        return book


class ShareServicer(share_pb2_grpc.ShareServiceServicer):
    def __init__(
        self,
        view: SchedulerView,
        auth: Authenticator,
        book: PublishedShares,
        what_if: WhatIf,
        policy_version: Callable[[], int],
        ledger: Ledger,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._ledger = ledger
        self._clock = clock
        self._view = view
        self._auth = auth
        self._book = book
        self._what_if = what_if
        self._policy_version = policy_version

    def GetEntitlements(
        self, request: share_pb2.GetEntitlementsRequest, context: grpc.ServicerContext
    ) -> bytes:
        """Answered with bytes serialized once per publication and scope (the server's
        response serializer passes bytes through, see `guard.pass_bytes`)."""
        principal = self._auth.caller(context)
        member = caller_scope(principal, request.member, context, everyone=True)
        book = self._book.current()
        if member is not None and member not in book.members:
            # A misspelt member read as one with no entitlement (ListPending and
            # GetUsage refuse it too).
            refuse_unknown_member(
                context, principal, member, book.policy.version or self._policy_version()
            )
        if request.gpu_model and request.gpu_model not in book.gpu_models:
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                not_a_gpu_model(request.gpu_model, book.policy.version or self._policy_version()),
            )
        return book.entitlements(member, request.gpu_model, self._policy_version)

    def ListPending(
        self, request: share_pb2.ListPendingRequest, context: grpc.ServicerContext
    ) -> share_pb2.ListPendingResponse:
        book = self._book.indexed()
        return list_pending(
            book.index,
            book,
            request,
            self._auth.caller(context),
            context,
            book.policy.version or self._policy_version(),
        )

    def ExplainPending(
        self, request: share_pb2.ExplainPendingRequest, context: grpc.ServicerContext
    ) -> share_pb2.ExplainPendingResponse:
        principal = self._auth.caller(context)
        book = self._book.indexed()
        return explain_pending(book.index, book, request, principal, context)

    def Simulate(
        self, request: share_pb2.SimulateRequest, context: grpc.ServicerContext
    ) -> share_pb2.SimulateResponse:
        # Here, not at the top: the API front imports this module and never simulates.
        from scheduler.api.whatif import SimulationFailed, inventory_document, trace_from_usage
        from scheduler.traces.synth import node_gpus_of

        source = request.source or share_pb2.SIMULATION_SOURCE_TRACE
        # A field of the other source would be left unread, and the answer, status OK,
        # be the replay of something the caller did not send.
        if source == share_pb2.SIMULATION_SOURCE_LEDGER and request.trace_csv:
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "trace_csv: given with source SIMULATION_SOURCE_LEDGER, which replays the "
                "ledger: send one or the other",
            )
        if source == share_pb2.SIMULATION_SOURCE_TRACE and request.ledger_days:
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "ledger_days: only with source SIMULATION_SOURCE_LEDGER (the request's "
                "source is a trace)",
            )
        try:
            draft = parse_policy(request.draft_policy_yaml, "draft_policy_yaml")
        except PolicyError as exc:
            abort_input(context, exc)
        batch_s = request.batch_seconds
        if not (math.isfinite(batch_s) and 0.0 <= batch_s <= MAX_BATCH_S):
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"batch_seconds: 0 to {MAX_BATCH_S:g}, got {batch_s}",
            )
        if source == share_pb2.SIMULATION_SOURCE_TRACE:
            if not request.trace_csv.strip():
                abort(context, grpc.StatusCode.INVALID_ARGUMENT, "trace_csv: empty")
            trace_csv = request.trace_csv
        elif source == share_pb2.SIMULATION_SOURCE_LEDGER:
            if not 1 <= request.ledger_days <= MAX_LEDGER_DAYS:
                abort(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"ledger_days: 1 to {MAX_LEDGER_DAYS}",
                )
            end = self._clock()
            start = end - timedelta(days=request.ledger_days)
            replay = trace_from_usage(
                self._ledger.usage_frame(start, end), start, set(draft.member_names())
            )
            if replay is None:
                abort(
                    context,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"no metered usage of members in the last {request.ledger_days} day(s)",
                )
            trace_csv = replay
        else:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"source: unknown value {source}")
        snapshot = self._view.snapshot()
        gaps = draft.price_gaps(n.gpu_model for n in snapshot.nodes if n.gpus > 0)
        if gaps:
            # The replay runs on these nodes: the simulator refused them, late and naming
            # the server's copy of the cluster.
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"draft_policy_yaml: {gaps}")
        try:
            # Checked here, before two simulator processes are started for it, against
            # the nodes they replay on (as `fairpool trace check --cluster` does): their
            # own messages would name the server's copy of the trace.
            inventory = parse_inventory(inventory_document(snapshot), "the cluster")
            read_trace_text(
                trace_csv,
                TRACE_FIELD,
                members=set(draft.member_names()),
                max_gang_gpus=inventory.total_gpus(),
                gpu_models=set(inventory.gpu_models()),
                node_gpus=node_gpus_of(inventory),
            )
        except InputError as exc:
            abort_input(context, exc)
        check_deadline(context, "simulating")
        current = self._view.policy()
        remaining = context.time_remaining()
        try:
            current_summary, draft_summary = self._what_if.compare(
                snapshot, current, draft, trace_csv, remaining, batch_s
            )
        except InputError as exc:
            abort_input(context, exc)
        except TimeoutError:
            abort(context, grpc.StatusCode.DEADLINE_EXCEEDED, "the simulation ran out of time")
        except SimulationFailed as exc:
            # The simulator's own output (paths, a traceback) stays in the server's log.
            incident = secrets.token_hex(4)
            log.error("simulation failed (incident %s): %s", incident, exc)
            abort(
                context,
                grpc.StatusCode.INTERNAL,
                f"the simulation failed (incident {incident}): the server's log has the details",
            )
        return share_pb2.SimulateResponse(
            current=convert_summary("current", current.version, current_summary),
            draft=convert_summary("draft", draft.version, draft_summary),
        )


def convert_summary(
    label: str, version: int, summary: dict[str, object]
) -> share_pb2.SimulationSummary:
    """The simulator's `summary.json` as the API's typed message; a figure the replay
    does not have (null or missing) is left out, never sent as 0, where the field is
    optional."""

    def figure(data: object, key: str) -> float | None:
        value = data.get(key) if isinstance(data, dict) else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value)

    def num(data: object, key: str) -> float:
        value = figure(data, key)
        return 0.0 if value is None else value

    def by_cause(data: object) -> dict[str, float]:
        return {c: num(data, f"reclaim_lost_{c}_gpu_h") for c in PREEMPTION_CAUSES}

    def optional(data: object, *keys: str) -> dict[str, float]:
        found = {key: figure(data, key) for key in keys}
        return {key: value for key, value in found.items() if value is not None}

    members = summary.get("members")
    outcomes = []
    if isinstance(members, dict):
        for name in sorted(members):
            m = members[name]
            outcomes.append(
                share_pb2.MemberOutcome(
                    member=str(name),
                    gpu_hours_used=num(m, "gpu_hours_used"),
                    gpu_hours_entitled=num(m, "gpu_hours_entitled"),
                    gpu_hours_borrowed=num(m, "gpu_hours_borrowed"),
                    gpu_hours_used_on_others_hardware=num(m, "gpu_hours_used_on_others_hardware"),
                    gpu_hours_lent=num(m, "gpu_hours_lent"),
                    gpu_hours_lost_to_reclaim=num(m, "gpu_hours_lost_to_reclaim"),
                    gpu_hours_lost_by_cause=by_cause(m),
                    preemptions=int(num(m, "preemptions")),
                    jobs_completed=int(num(m, "jobs_completed")),
                    mean_wait_s=num(m, "mean_wait_s"),
                    p95_wait_s=num(m, "p95_wait_s"),
                    mean_jct_s=num(m, "mean_jct_s"),
                    **optional(m, "time_to_entitlement_p99_s"),
                )
            )
    return share_pb2.SimulationSummary(
        label=label,
        policy_version=version,
        utilization=num(summary, "utilization"),
        entitlement_violation_gpu_s=num(summary, "entitlement_violation_gpu_s"),
        preemptions=int(num(summary, "preemptions")),
        gpu_hours_lost_to_reclaim=num(summary, "gpu_hours_lost_to_reclaim"),
        gpu_hours_lost_by_cause=by_cause(summary),
        preemptions_per_job_max=int(num(summary, "preemptions_per_job_max")),
        members=outcomes,
        **optional(
            summary,
            "utilization_while_pending",
            "makespan_s",
            "fairness_jain",
            "reclaim_lost_fraction",
            "time_to_entitlement_p99_s",
            "mean_jct_s",
            "p95_wait_s",
        ),
        summary_json=json.dumps(summary, sort_keys=True),
    )
