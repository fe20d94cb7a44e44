"""Turning domain errors into gRPC status codes, in one place."""

from __future__ import annotations

from typing import NoReturn

import grpc

from policies.errors import InputError, PolicyError

TRACE_FIELD = "trace_csv"
"""The `SimulateRequest` field holding a trace: what the trace's errors are named after
(the request carries the text, not the user's file name; `fairpool policy simulate` puts
the file's name back)."""
MAX_DETAILS = 4000
"""gRPC details travel in a header; keep them well under common header limits."""


def abort_input(context: grpc.ServicerContext, error: InputError) -> NoReturn:
    """INVALID_ARGUMENT naming every field path and line the error lists."""
    if isinstance(error, PolicyError):
        lines = [str(issue) for issue in error.issues]
        details = f"invalid policy: {len(lines)} error(s): " + "; ".join(lines)
    else:
        details = str(error)
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, _short(details))
    raise AssertionError("unreachable")  # context.abort raises


def abort(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> NoReturn:
    context.abort(code, _short(details))
    raise AssertionError("unreachable")


def _short(details: str) -> str:
    return details if len(details) <= MAX_DETAILS else details[: MAX_DETAILS - 1] + "…"


def check_deadline(context: grpc.ServicerContext, what: str) -> None:
    """DEADLINE_EXCEEDED, before starting `what`, when the caller has stopped waiting:
    nothing is changed or computed for an answer nobody will read."""
    remaining = context.time_remaining()
    if (remaining is not None and remaining <= 0) or not context.is_active():
        abort(context, grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline passed before {what}")
