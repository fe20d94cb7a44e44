"""UsageService: metered GPU-hours from the ledger and the monthly report files."""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pandas as pd

from policies.model import Policy
from proto.fairpool.v1 import usage_pb2, usage_pb2_grpc
from reports.ledger import Ledger
from scheduler.api import convert
from scheduler.api.auth import Authenticator, Principal, RoleKind
from scheduler.api.errors import abort

MAX_RANGE = timedelta(days=400)
DEFAULT_RANGE = timedelta(days=30)
MAX_REPORT_BYTES = 32 << 20
MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def usage_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Per member and GPU model: GPU-hours used, used on others' nodes (borrowed) and
    used by others on the member's nodes (lent, as one total: who borrowed stays out)."""
    columns = ["member", "gpu_model", "used", "borrowed", "lent"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    hours = frame.assign(h=frame["gpu_seconds"] / 3600.0)
    away = hours[hours["member"] != hours["owner"]]
    used = hours.groupby(["member", "gpu_model"])["h"].sum().rename("used")
    borrowed = away.groupby(["member", "gpu_model"])["h"].sum().rename("borrowed")
    lent = away.groupby(["owner", "gpu_model"])["h"].sum().rename("lent")
    lent.index = lent.index.set_names(["member", "gpu_model"])
    table = pd.concat([used, borrowed, lent], axis=1).fillna(0.0).reset_index()
    return table.sort_values(["member", "gpu_model"])[columns]


def visible_report_files(folder: Path, principal: Principal, members: list[str]) -> list[Path]:
    """Report files the caller may read: an admin all of them; anyone else the shared
    ones (naming no member) and a member also those naming only itself."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    if principal.kind is RoleKind.ADMIN:
        return files
    out = []
    for path in files:
        text = str(path.relative_to(folder)).lower()
        named = {
            m for m in members if re.search(rf"(^|[^a-z0-9-]){re.escape(m)}($|[^a-z0-9-])", text)
        }
        if not named or named == {principal.member}:
            out.append(path)
    return out


class UsageServicer(usage_pb2_grpc.UsageServiceServicer):
    def __init__(
        self,
        auth: Authenticator,
        ledger_url: str,
        reports_dir: Path | None,
        policy: Callable[[], Policy],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._auth = auth
        self._ledger = Ledger(ledger_url)
        self._reports_dir = reports_dir
        self._policy = policy
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
        try:
            end = convert.from_timestamp(request.end) if request.HasField("end") else self._clock()
            start = (
                convert.from_timestamp(request.start)
                if request.HasField("start")
                else end - DEFAULT_RANGE
            )
        except (ValueError, OverflowError) as exc:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"start/end: {exc}")
        if not start < end:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "start: must be before end")
        if end - start > MAX_RANGE:
            abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, f"end: range over {MAX_RANGE.days} days"
            )
        table = usage_rows(self._ledger.usage_frame(start, end))
        if member is not None:
            table = table[table["member"] == member]
        return usage_pb2.GetUsageResponse(
            start=convert.timestamp(start),
            end=convert.timestamp(end),
            rows=[
                usage_pb2.UsageRow(
                    member=str(r.member),
                    gpu_model=str(r.gpu_model),
                    gpu_hours_used=float(r.used),
                    gpu_hours_borrowed=float(r.borrowed),
                    gpu_hours_lent=float(r.lent),
                )
                for r in table.itertuples(index=False)
            ],
        )

    def GetReport(
        self, request: usage_pb2.GetReportRequest, context: grpc.ServicerContext
    ) -> usage_pb2.GetReportResponse:
        principal = self._auth.caller(context)
        if not MONTH.match(request.month):
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "month: expected YYYY-MM")
        folder = self._reports_dir / request.month if self._reports_dir is not None else None
        if folder is None or not folder.is_dir():
            abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"no report for {request.month} (reports are written by `fairpool report`)",
            )
        members = self._policy().member_names()
        files = []
        total = 0
        for path in visible_report_files(folder, principal, members):
            content = path.read_bytes()
            total += len(content)
            if total > MAX_REPORT_BYTES:
                abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "report larger than 32 MiB")
            media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            files.append(
                usage_pb2.ReportFile(
                    name=str(path.relative_to(folder)), media_type=media_type, content=content
                )
            )
        return usage_pb2.GetReportResponse(month=request.month, files=files)
