"""Generators and checks for fuzzing the gRPC API, shared by the bounded tests
(tests/unit/test_api_fuzz.py) and the long run (`python -m bench fuzz`, or a fuzz phase of
another benchmark: `fuzz_for(seconds, ...)`).

Policies (valid ones and mutated ones), trace CSV rows (valid and mutated cells) and
requests for every method, sent by every role to a real server. What must hold for every
answer: never UNKNOWN or INTERNAL (an exception nobody meant), and an INVALID_ARGUMENT
names what was wrong (a field, a line)."""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import yaml
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

from proto.fairpool.v1 import policy_pb2, share_pb2, usage_pb2

MEMBER_NAMES = ("uni-north", "physics", "lab-bio", "ai-startup", "m-1", "z")
GPU_MODELS = ("NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB", "L40S")
METHODS: dict[str, MethodDescriptor] = {
    f"/{m.containing_service.full_name}/{m.name}": m
    for file in (policy_pb2.DESCRIPTOR, share_pb2.DESCRIPTOR, usage_pb2.DESCRIPTOR)
    for service in file.services_by_name.values()
    for m in service.methods
}
BAD_STATUSES = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL})
"""Answers that mean an exception nobody meant (INTERNAL comes from the catch-all)."""
WATCH_SECONDS = 0.25
"""How long a fuzzed watch stays open: a watcher waits for changes that may never come,
and a handler that crashes on its request does so within milliseconds."""
NAMES_SOMETHING = re.compile(r"(^|\s)[\w<>\[\]./-]+:|line \d+")
"""An error that names a field (`month: ...`, `spec.members[0].weight: ...`) or a line."""

# ---------------------------------------------------------------- policies


def _names(pool: tuple[str, ...], least: int) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(pool), min_size=least, max_size=len(pool), unique=True)


@st.composite
def valid_policy_data(draw: st.DrawFn) -> dict[str, Any]:
    """A policy document (as data) inside every documented range."""
    models = draw(_names(GPU_MODELS, 1))
    members = []
    for name in draw(_names(MEMBER_NAMES, 1)):
        member: dict[str, Any] = {"name": name, "namespaces": [name, f"{name}-*"]}
        if draw(st.booleans()):
            member["weight"] = draw(st.floats(0.01, 1e6))
        if draw(st.booleans()):
            member["purchased"] = {
                m: draw(st.integers(0, 64)) for m in draw(st.lists(st.sampled_from(models)))
            }
        if draw(st.booleans()):
            member["maxGpus"] = draw(st.none() | st.integers(0, 10_000))
        if draw(st.booleans()):
            member["lendingLimit"] = draw(st.none() | st.integers(0, 10_000))
        member["checkpointable"] = draw(st.booleans())
        members.append(member)
    sharing = {
        "borrowing": draw(st.booleans()),
        "reclaimGracePeriodSeconds": draw(st.integers(0, 86_400)),
        "minRuntimeSeconds": draw(st.integers(0, 3600)),
        "maxReclaimsPerJob": draw(st.none() | st.integers(0, 1000)),
        "usageHalfLifeHours": draw(st.none() | st.floats(0.1, 87_600)),
    }
    return {
        "apiVersion": "fairpool.io/v1",
        "kind": "Policy",
        "spec": {
            "gpuModels": [
                {"name": m, "hourlyCost": str(draw(st.integers(0, 10_000)) / 100)} for m in models
            ],
            "members": members,
            "sharing": sharing,
            "billing": {"idleCost": draw(st.sampled_from(["owner", "by-usage"]))},
        },
    }


HOSTILE_VALUES: tuple[object, ...] = (
    None,
    "",
    "*",
    "x" * 300,
    "\x00",
    -1,
    0,
    10**30,
    2**63,
    float("inf"),
    float("-inf"),
    float("nan"),
    1e308,
    True,
    [],
    {},
    "0000-01-01",
    "NVIDIA-H100-80GB-HBM3",
)


def _deep(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def _paths(data: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Every path to a value inside `data`."""
    found = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found += _paths(value, (*prefix, i))
    return found


def _set(data: Any, path: tuple[object, ...], value: object) -> None:
    for part in path[:-1]:
        data = data[part]
    if value is _DELETE:
        del data[path[-1]]
    else:
        data[path[-1]] = value


_DELETE = object()


@st.composite
def mutated_policy_text(draw: st.DrawFn) -> str:
    """A valid policy with one to three values replaced by hostile ones, keys deleted or
    added, and sometimes the YAML text itself damaged."""
    data = draw(valid_policy_data())
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        value = draw(
            st.sampled_from(HOSTILE_VALUES)
            | st.just(_DELETE)
            | st.builds(_deep, st.integers(30, 60))
            | st.text(max_size=20)
        )
        # Copies: the hostile `[]` and `{}` are shared by every example, and one object
        # set at two places (the spec itself, then a key of it) would contain itself.
        _set(data, path, value if value is _DELETE else copy.deepcopy(value))
        if value is not _DELETE and draw(st.booleans()):
            data.setdefault("spec", {})
            if isinstance(data["spec"], dict):
                key = draw(st.sampled_from(["colour", "members", "gpuModels"]))
                data["spec"][key] = copy.deepcopy(value)
    text = yaml.safe_dump(data, sort_keys=False)
    damage = draw(st.integers(0, 5))
    if damage == 1:
        text = text[: draw(st.integers(0, len(text)))]
    elif damage == 2:
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.text(min_size=1, max_size=8)) + text[at:]
    elif damage == 3:
        text = text.replace("weight: ", "weight: " + "9" * draw(st.integers(40, 5000)), 1)
    elif damage == 4:
        depth = draw(st.integers(30, 600))
        text += "extra: " + "[" * depth + "]" * depth + "\n"
    return text


def policy_texts() -> st.SearchStrategy[str]:
    """Valid policies and mutated ones, about one in three valid."""
    valid = valid_policy_data().map(lambda d: yaml.safe_dump(d, sort_keys=False))
    return st.one_of(valid, mutated_policy_text(), mutated_policy_text())


# ---------------------------------------------------------------- traces

TRACE_HEADER = ["job_id", "org", "submit_time", "duration_s", "num_pods", "gpus_per_pod"]
HOSTILE_CELLS = ("", "\x00", "-1", "0", "1e300", "nan", "inf", "9" * 50, "2.5", "j,1", '"')


@st.composite
def trace_rows(draw: st.DrawFn) -> list[str]:
    """One row of the canonical trace, valid or with one to two hostile cells."""
    row = [
        f"j{draw(st.integers(0, 10**6))}",
        draw(st.sampled_from(MEMBER_NAMES)),
        str(draw(st.integers(0, 86_400))),
        str(draw(st.integers(1, 7200))),
        str(draw(st.integers(1, 2))),
        str(draw(st.sampled_from([1, 2, 4, 8]))),
    ]
    for _ in range(draw(st.integers(0, 2))):
        row[draw(st.integers(0, len(row) - 1))] = draw(
            st.sampled_from(HOSTILE_CELLS) | st.text(max_size=12)
        )
    return row


@st.composite
def trace_csv(draw: st.DrawFn) -> str:
    """A trace CSV of one to five rows (some mutated), sometimes with a damaged header."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = list(TRACE_HEADER)
    if draw(st.integers(0, 9)) == 0:
        header[draw(st.integers(0, len(header) - 1))] = draw(st.text(max_size=8))
    writer.writerow(header)
    writer.writerows(draw(st.lists(trace_rows(), min_size=1, max_size=5)))
    return out.getvalue()


# ---------------------------------------------------------------- requests

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
}


def _field_value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        return st.integers(low, high) | st.integers(-3, 12)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return st.floats(allow_nan=True, allow_infinity=True)
    if kind == FieldDescriptor.TYPE_STRING:
        return st.text(max_size=200) | st.sampled_from(["", *MEMBER_NAMES, "2026-10", "*"])
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=100)
    if kind == FieldDescriptor.TYPE_ENUM:
        return st.integers(-5, 10)  # open enums: unknown numbers must be handled
    if kind == FieldDescriptor.TYPE_MESSAGE and depth < 2:
        return message_strategy(field.message_type, depth + 1)
    return st.nothing()


def message_strategy(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Any message of `descriptor`'s type, each field set or not, to any value."""
    cls = GetMessageClass(descriptor)
    if descriptor.full_name == "google.protobuf.Timestamp":
        fields = {
            "seconds": st.integers(-(2**40), 2**40) | st.integers(-(2**63), 2**63 - 1),
            "nanos": st.integers(-(2**31), 2**31 - 1),
        }
    else:
        fields = {f.name: _field_value(f, depth) for f in descriptor.fields}

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        message = cls()
        for name, strategy in fields.items():
            if draw(st.booleans()):
                continue
            value = draw(strategy)
            target = descriptor.fields_by_name[name]
            if target.type == FieldDescriptor.TYPE_MESSAGE:
                getattr(message, name).CopyFrom(value)
            else:
                setattr(message, name, value)
        return message

    return build()


def _months() -> st.SearchStrategy[str]:
    return st.from_regex(r"\A\d{4}-\d{2}\Z") | st.sampled_from(
        ["2026-10", "0000-01", "9999-12", "1970-01", "2026-13", "", "٢٠٢٦-10"]
    )


def _structured() -> dict[str, st.SearchStrategy[Message]]:
    """Requests shaped like real ones, with policies and traces from the generators."""
    P, S, U = policy_pb2, share_pb2, usage_pb2
    return {
        "/fairpool.v1.PolicyService/ValidatePolicy": st.builds(
            P.ValidatePolicyRequest, yaml=policy_texts()
        ),
        "/fairpool.v1.PolicyService/ApplyPolicy": st.builds(
            P.ApplyPolicyRequest,
            yaml=policy_texts(),
            dry_run=st.booleans(),
            expected_version=st.integers(-1, 5),
            comment=st.text(max_size=50) | st.just("c" * 5000),
        ),
        "/fairpool.v1.PolicyService/GetPolicy": st.builds(
            P.GetPolicyRequest, version=st.integers(-2, 6) | st.just(2**63 - 1)
        ),
        "/fairpool.v1.PolicyService/ListPolicyVersions": st.builds(
            P.ListPolicyVersionsRequest,
            page_size=st.integers(-1, 1000),
            before_version=st.integers(-1, 10),
            omit_yaml=st.booleans(),
        ),
        "/fairpool.v1.ShareService/Simulate": st.builds(
            S.SimulateRequest,
            draft_policy_yaml=mutated_policy_text(),
            trace_csv=trace_csv(),
            source=st.integers(-1, 3),
            ledger_days=st.integers(-1, 100),
        ),
        "/fairpool.v1.ShareService/ExplainPending": st.builds(
            S.ExplainPendingRequest,
            name=st.text(max_size=30) | st.sampled_from(["job-1", "demo-0", ""]),
            namespace=st.text(max_size=10) | st.sampled_from(MEMBER_NAMES),
        ),
        "/fairpool.v1.UsageService/GetReport": st.builds(U.GetReportRequest, month=_months()),
    }


@st.composite
def requests(draw: st.DrawFn, methods: tuple[str, ...] | None = None) -> tuple[str, Message]:
    """(method path, request): shaped like a real request when the method has a
    structured generator (half the time), else any field values."""
    path = draw(st.sampled_from(methods or tuple(METHODS)))
    structured = _structured()
    if path in structured and draw(st.booleans()):
        return path, draw(structured[path])
    return path, draw(message_strategy(METHODS[path].input_type))


# ---------------------------------------------------------------- calling and tallying


def call(
    channel: grpc.Channel,
    path: str,
    request: Message,
    metadata: tuple[tuple[str, str], ...],
    timeout: float,
) -> tuple[grpc.StatusCode, str]:
    """Send one request (reading at most two messages of a stream, for at most
    `WATCH_SECONDS`); (status, details)."""
    method = METHODS[path]
    identity = {"request_serializer": None, "response_deserializer": None}
    payload = request.SerializeToString()
    try:
        if method.server_streaming:
            stream = channel.unary_stream(path, **identity)(
                payload, metadata=metadata, timeout=min(timeout, WATCH_SECONDS)
            )
            for i, _ in enumerate(stream):
                if i >= 1:
                    stream.cancel()
                    break
        else:
            channel.unary_unary(path, **identity)(payload, metadata=metadata, timeout=timeout)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def problem(path: str, code: grpc.StatusCode, details: str) -> str | None:
    """What is wrong with an answer, or None when it is a deliberate one."""
    name = path.rsplit("/", 1)[-1]
    if code in BAD_STATUSES:
        return f"{name} answered {code.name}: {details[:300]}"
    if code == grpc.StatusCode.INVALID_ARGUMENT and not NAMES_SOMETHING.search(details):
        return f"{name}: INVALID_ARGUMENT names no field or line: {details[:300]}"
    return None


@dataclass
class Tally:
    """Requests per method and the statuses seen, and every problem found."""

    calls: Counter[str] = field(default_factory=Counter)
    statuses: Counter[tuple[str, str]] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def record(self, path: str, code: grpc.StatusCode, details: str) -> None:
        name = path.rsplit("/", 1)[-1]
        self.calls[name] += 1
        self.statuses[(name, code.name)] += 1
        found = problem(path, code, details)
        if found is not None:
            self.problems.append(found)

    def status_names(self) -> list[str]:
        return sorted({status for _, status in self.statuses})


def fuzz_for(
    seconds: float,
    channel: grpc.Channel,
    roles: dict[str, tuple[tuple[str, str], ...]],
    tally: Tally,
    timeout: float = 5.0,
    methods: tuple[str, ...] | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> Tally:
    """Send generated requests for `seconds` (as many as fit), each from a role drawn
    from `roles` (name -> call metadata), into `tally`. For long runs outside pytest."""
    from hypothesis import HealthCheck, Phase, given, settings

    until = time.monotonic() + seconds
    role_names = tuple(roles)

    @settings(
        max_examples=10**9,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(request=requests(methods), role=st.sampled_from(role_names))
    def one(request: tuple[str, Message], role: str) -> None:
        if time.monotonic() > until or stop():
            raise _Done
        path, message = request
        tally.record(path, *call(channel, path, message, roles[role], timeout))

    with contextlib.suppress(_Done):
        one()
    return tally


class _Done(Exception):
    """The time for fuzzing is up."""
