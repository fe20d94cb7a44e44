"""UsageService: metered GPU-hours from the ledger and the monthly report files."""

from __future__ import annotations

import mimetypes
import re
import tempfile
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pandas as pd

from policies.errors import InputError
from policies.instants import FIRST_YEAR, LAST_YEAR, YEARS, within
from policies.model import Policy
from proto.fairpool.v1 import usage_pb2, usage_pb2_grpc
from reports.costmodel import MonthReport, NoDataError
from reports.ledger import Ledger
from reports.rendering.render import write_report
from reports.sources.monthly_job import ledger_month_report
from scheduler.api import messages
from scheduler.api.auth import Authenticator, Principal, RoleKind, member_not_in_policy
from scheduler.api.errors import abort, abort_input, check_deadline

MAX_RANGE = timedelta(days=400)
DEFAULT_RANGE = timedelta(days=30)
MAX_REPORT_BYTES = 32 << 20
MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$", re.ASCII)


def usage_rows(frame: pd.DataFrame, members: Collection[str]) -> pd.DataFrame:
    """Per member and GPU model: GPU-hours used, used on others' hardware (on nodes
    another member owns) and lent (other members' pods on the member's nodes, as one
    total: who used them stays out). The ledger knows where pods ran, not entitlements,
    so it cannot tell borrowing. Nodes whose owner is not in `members` are unowned: their
    use is neither, so lent and used on others' hardware add up to the same total."""
    columns = ["member", "gpu_model", "used", "used_on_others_hardware", "lent"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    hours = frame.assign(h=frame["gpu_seconds"] / 3600.0)
    away = hours[(hours["member"] != hours["owner"]) & hours["owner"].isin(list(members))]
    used = hours.groupby(["member", "gpu_model"])["h"].sum().rename("used")
    elsewhere = away.groupby(["member", "gpu_model"])["h"].sum().rename("used_on_others_hardware")
    lent = away.groupby(["owner", "gpu_model"])["h"].sum().rename("lent")
    lent.index = lent.index.set_names(["member", "gpu_model"])
    table = pd.concat([used, elsewhere, lent], axis=1).fillna(0.0).reset_index()
    return table.sort_values(["member", "gpu_model"])[columns]


def _instant(
    request: usage_pb2.GetUsageRequest, name: str, context: grpc.ServicerContext
) -> datetime | None:
    """The request's `start` or `end` (None when unset); a Timestamp out of its range is
    INVALID_ARGUMENT naming that field."""
    if not request.HasField(name):
        return None
    try:
        return messages.from_timestamp(getattr(request, name))
    except (ValueError, OverflowError) as exc:
        abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"{name}: {exc}")


VIEWER_FILES = ("summary.csv", "summary.parquet", "settlement.csv")
"""A viewer gets the summaries, not the invoices."""


def report_files(built: MonthReport, principal: Principal) -> dict[str, bytes]:
    """The report as the caller may see it, written by the reports module: an admin the
    whole report, a member its restricted report (own invoice, the pool's totals, the
    settlement it is a party to), a viewer the summary tables."""
    member = principal.member if principal.kind is RoleKind.MEMBER else None
    with tempfile.TemporaryDirectory(prefix="fairpool-report-") as tmp:
        paths = write_report(built, Path(tmp) / "report", member=member)
        files = {p.name: p.read_bytes() for p in paths}
    if principal.kind is RoleKind.VIEWER:
        files = {name: files[name] for name in VIEWER_FILES if name in files}
    return files


class UsageServicer(usage_pb2_grpc.UsageServiceServicer):
    def __init__(
        self,
        auth: Authenticator,
        ledger_url: str,
        policy: Callable[[], Policy],
        policies: Callable[[], Mapping[int, Policy]],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._auth = auth
        self._ledger = Ledger(ledger_url)
        self._ledger_url = ledger_url
        self._policy = policy
        self._policies = policies
        self._clock = clock

    def GetUsage(
        self, request: usage_pb2.GetUsageRequest, context: grpc.ServicerContext
    ) -> usage_pb2.GetUsageResponse:
        principal = self._auth.caller(context)
        member: str | None = request.member or None
        if principal.kind is RoleKind.MEMBER:
            if member is not None and member != principal.member:
                abort(
                    context,
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"role {principal.role} may only read its own member's usage",
                )
            member = principal.member
        end = _instant(request, "end", context) or self._clock()
        start = _instant(request, "start", context) or end - DEFAULT_RANGE
        if not start < end:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "start: must be before end")
        if end - start > MAX_RANGE:
            abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, f"end: range over {MAX_RANGE.days} days"
            )
        for name, value in (("start", start), ("end", end)):
            if not within(value):
                abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"{name}: not in {YEARS}")
        policy = self._policy()
        members = policy.member_names()
        table = usage_rows(self._ledger.usage_frame(start, end), members)
        if member is not None:
            table = table[table["member"] == member]
            if table.empty and member not in members:
                # A misspelt member read as "no metered usage". A member the policy no
                # longer has keeps its rows, so only a name with neither is refused.
                if principal.kind is RoleKind.MEMBER:
                    abort(
                        context,
                        grpc.StatusCode.PERMISSION_DENIED,
                        member_not_in_policy(principal, policy.version or None),
                    )
                abort(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"member: {member!r} is not a member of the policy and has no usage "
                    "in the range",
                )
        return usage_pb2.GetUsageResponse(
            start=messages.timestamp(start),
            end=messages.timestamp(end),
            rows=[
                usage_pb2.UsageRow(
                    member=str(r.member),
                    gpu_model=str(r.gpu_model),
                    gpu_hours_used=float(r.used),
                    gpu_hours_used_on_others_hardware=float(r.used_on_others_hardware),
                    gpu_hours_lent=float(r.lent),
                )
                for r in table.itertuples(index=False)
            ],
        )

    def GetReport(
        self, request: usage_pb2.GetReportRequest, context: grpc.ServicerContext
    ) -> usage_pb2.GetReportResponse:
        principal = self._auth.caller(context)
        month = request.month
        if not MONTH.fullmatch(month) or not FIRST_YEAR <= int(month[:4]) <= LAST_YEAR:
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"month: expected YYYY-MM in {YEARS}",
            )
        policy = self._policy()
        if principal.kind is RoleKind.MEMBER and principal.member not in policy.member_names():
            abort(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                member_not_in_policy(principal, policy.version or None),
            )
        check_deadline(context, "building the report")
        try:
            built = ledger_month_report(
                self._ledger_url, policy, request.month, policies=self._policies()
            )
        except NoDataError as exc:
            abort(context, grpc.StatusCode.NOT_FOUND, f"no report for {request.month}: {exc}")
        except InputError as exc:
            abort_input(context, exc)
        files = report_files(built, principal)
        if sum(len(c) for c in files.values()) > MAX_REPORT_BYTES:
            abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "report larger than 32 MiB")
        return usage_pb2.GetReportResponse(
            month=request.month,
            files=[
                usage_pb2.ReportFile(
                    name=name,
                    media_type=mimetypes.guess_type(name)[0] or "application/octet-stream",
                    content=content,
                )
                for name, content in files.items()
            ],
        )
