"""The canonical trace CSV (docs/policy.md, "The trace CSV"): read with every problem
named by line and column, and written atomically."""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from policies.files import open_whole
from policies.instants import END_INSTANT, FIRST_INSTANT, YEARS
from policies.numbers import DECIMAL, INTEGER
from scheduler.traces.errors import IssueCollector, TraceError, TraceIssue
from scheduler.traces.model import Trace, TraceJob

REQUIRED_COLUMNS = ("job_id", "org", "submit_time", "duration_s", "num_pods", "gpus_per_pod")
MAX_SECONDS = 10 * 366 * 86_400.0
"""Submit times (in seconds) and durations: ten years, far beyond any simulated month."""
MAX_COUNT = 100_000
"""Pods of one job, GPUs of one pod."""
PRIORITY_RANGE = (-(2**31), 2**31 - 1)
"""A Kubernetes priority, and the API's int32."""
MAX_NAME_CHARS = 253
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
LONE_CR = re.compile(r"(?<=\r)(?!\n)")
OPTIONAL_COLUMNS = ("gpu_model", "priority", "checkpointable")
CANONICAL_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS


def _open_source(path_or_text: str | os.PathLike[str], text_name: str) -> tuple[str, Iterator[str]]:
    """(name for messages, lines). A string holding a newline is the CSV itself, named
    `text_name` in messages."""
    if isinstance(path_or_text, str) and "\n" in path_or_text:
        return text_name, iter(io.StringIO(path_or_text, newline=""))
    path = Path(path_or_text)
    return str(path), utf8_lines(path)


def utf8_lines(path: Path) -> Generator[str, None, None]:
    """The lines of a UTF-8 text file (a leading byte-order mark left out), decoded one by
    one so that bytes that are not UTF-8 name their line: decoded by the file object,
    a chunk at a time, they named none in a file of thousands."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise TraceError(
            str(path), [TraceIssue(None, None, f"cannot read: {exc.strerror}")]
        ) from exc
    with handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                where = f"byte {exc.start + 1} of the line"
                message = f"not UTF-8 text: {exc.reason} at {where}"
                raise TraceError(str(path), [TraceIssue(number, None, message)]) from exc
            if number == 1:
                text = text.removeprefix("\ufeff")
            if "\r" in text.rstrip("\r\n"):
                # Lines that end in a lone CR (as a text file read with newline=""
                # splits them): the CSV reader refuses one within a line.
                yield from LONE_CR.split(text)
            else:
                yield text


def finite_number(text: str) -> float | None:
    """A finite number in ASCII decimal notation (`policies.numbers.DECIMAL`; spaces
    around it allowed), or None (nan and infinity are not one)."""
    text = text.strip()
    if not DECIMAL.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def whole_number(text: str) -> int | None:
    """An integer, also written as '2.0' (spreadsheets do that)."""
    text = text.strip()
    if len(text) > 40:
        return None  # converting thousands of digits costs quadratic time, for nothing
    value = finite_number(text)
    if value is None or not value.is_integer():
        return None
    # Digits alone convert exactly; '2.0' and '1e3' through the float.
    return int(text) if INTEGER.fullmatch(text) else int(value)


def _iso_epoch(text: str) -> float | None:
    """UTC epoch seconds of an ISO-8601 time; a time without a zone is UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def read_trace(
    path_or_text: str | os.PathLike[str],
    members: set[str] | None = None,
    max_gang_gpus: int | None = None,
    gpu_models: set[str] | None = None,
    node_gpus: Mapping[str, Sequence[int]] | None = None,
    text_name: str = "<trace>",
) -> Trace:
    """The trace in a canonical CSV file (or CSV text, named `text_name` in messages),
    sorted by (submit_time, job_id).

    `members`, `gpu_models` and `max_gang_gpus` (the cluster's GPU count), when given,
    are checked too; `node_gpus` (GPU model -> GPUs of each node, see
    `synth.node_gpus_of`) also rejects pods bigger than any node and gangs that cannot
    fit even on an idle cluster. Raises TraceError listing every problem found (the
    first 20 in full) with its line and column."""
    limits = _Limits(members, max_gang_gpus, gpu_models, node_gpus)
    source, lines = _open_source(path_or_text, text_name)
    problems = IssueCollector(source)
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise TraceError(
            source, [TraceIssue(1, None, "empty file: expected a header row")]
        ) from None
    except csv.Error as exc:
        raise TraceError(source, [TraceIssue(1, None, f"not CSV: {exc}")]) from exc
    index = _check_header([c.strip() for c in header], problems)
    control_cells(header, {c.strip(): i for i, c in enumerate(header)}, 1, problems)
    problems.raise_if_any()

    jobs: list[TraceJob] = []
    first_line_of: dict[str, int] = {}
    time_kind: str | None = None  # "seconds" or "iso", fixed by the first readable row
    width = len(header)
    ended = reader.line_num
    try:
        for row in reader:
            # A row is named by the line it starts on: the reader counts to its last,
            # and a quoted field over several lines (a quote left open) named a later
            # line, whose own row was fine.
            line, ended = ended + 1, reader.line_num
            if not row or all(not cell.strip() for cell in row):
                blank_row_control(row, line, problems)
                continue
            if len(row) != width:
                spans = f" (a quoted field runs on to line {ended}: is a quote left open?)"
                message = f"{len(row)} fields, the header has {width}"
                problems.add(line, None, message + (spans if ended > line else ""))
                continue
            job, time_kind = _parse_row(row, line, index, time_kind, problems, limits)
            # Said of a row with other problems too, and against one: every problem at
            # once, so the file is not fixed and sent back only to fail again.
            job_id = row[index["job_id"]].strip()
            if job_id in first_line_of:
                problems.add(
                    line,
                    "job_id",
                    f"duplicate job_id {job_id!r} (first on line {first_line_of[job_id]})",
                )
                continue
            if job_id:
                first_line_of[job_id] = line
            if job is not None:
                jobs.append(job)
    except csv.Error as exc:
        problems.add(reader.line_num, None, f"not CSV: {exc}")
    if not jobs and not problems:
        problems.add(None, None, "empty trace: the file has a header but no jobs")
    problems.raise_if_any()

    start_epoch = None
    if time_kind == "iso":
        # ISO times were kept as epoch seconds; trace time 0 is the earliest submission.
        start_epoch = min(j.submit_time for j in jobs)
        jobs = [_shift(j, start_epoch) for j in jobs]
        for job in jobs:
            if job.submit_time > MAX_SECONDS:
                problems.add(
                    first_line_of[job.job_id],
                    "submit_time",
                    f"{job.submit_time:,.0f} s after the first submission, beyond "
                    f"{MAX_SECONDS:,.0f} s",
                )
        problems.raise_if_any()
    jobs.sort(key=lambda j: (j.submit_time, j.job_id))
    return Trace(jobs=tuple(jobs), start_epoch=start_epoch)


def read_trace_text(
    text: str,
    name: str,
    members: set[str] | None = None,
    max_gang_gpus: int | None = None,
    gpu_models: set[str] | None = None,
    node_gpus: Mapping[str, Sequence[int]] | None = None,
) -> Trace:
    """`read_trace` of CSV text already in hand (a request's field, a file read to be
    sent), named `name` in messages. Text with no newline would be taken for a file
    name: here it never is, so a server never reads a path a caller chose."""
    # A file read as text keeps its byte-order mark: `read_trace` drops it from a file.
    text = text.removeprefix("\ufeff")
    if "\n" not in text:
        text += "\n"
    return read_trace(text, members, max_gang_gpus, gpu_models, node_gpus, text_name=name)


def _shift(job: TraceJob, origin: float) -> TraceJob:
    return replace(job, submit_time=job.submit_time - origin)


def _check_header(names: list[str], problems: IssueCollector) -> dict[str, int]:
    index: dict[str, int] = {}
    for position, name in enumerate(names):
        if name in index:
            problems.add(1, name, "column appears twice in the header")
        index[name] = position
    for name in REQUIRED_COLUMNS:
        if name not in index:
            problems.add(1, name, "missing required column")
    extra = [n for n in names if n not in CANONICAL_COLUMNS]
    if extra:
        allowed = ", ".join(CANONICAL_COLUMNS)
        problems.add(
            1, ", ".join(extra), f"unknown column(s) {', '.join(extra)} (allowed: {allowed})"
        )
    return index


@dataclass(frozen=True)
class _Limits:
    """What rows are checked against, when the caller knows the cluster and policy."""

    members: set[str] | None
    max_gang_gpus: int | None
    gpu_models: set[str] | None
    node_gpus: Mapping[str, Sequence[int]] | None

    def unfit(self, pods: int, per_pod: int, model: str | None) -> tuple[str, str] | None:
        """(column, why) when the job cannot run even on an idle cluster, else None."""
        assert self.node_gpus is not None
        if model is not None:
            candidates = {model: list(self.node_gpus.get(model, []))}
        else:
            candidates = {m: list(n) for m, n in self.node_gpus.items()}
        nodes = [n for group in candidates.values() for n in group]
        biggest = max(nodes, default=0)
        label = f"{model} " if model else ""
        if not nodes:
            # `node_gpus_of` leaves out nodes whose taints keep a simulated pod off.
            return "gpus_per_pod", (
                f"no {label}node of the cluster takes a pod (none has GPUs, or their "
                "NoSchedule or NoExecute taints keep it off)"
            )
        if per_pod > biggest:
            return "gpus_per_pod", (
                f"a pod of {per_pod} GPUs is larger than any {label}node (biggest: {biggest})"
            )
        room = max(sum(n // per_pod for n in group) for group in candidates.values())
        if pods > room:
            whose = f"the {label}nodes" if len(candidates) == 1 else "the nodes of one GPU model"
            return "num_pods", (
                f"gang of {pods} pods x {per_pod} GPUs cannot fit: {whose} hold at most "
                f"{room} such pods"
                + (" (a gang never mixes GPU models)" if len(candidates) > 1 else "")
            )
        return None


def _parse_row(
    row: list[str],
    line: int,
    index: dict[str, int],
    time_kind: str | None,
    problems: IssueCollector,
    limits: _Limits,
) -> tuple[TraceJob | None, str | None]:
    """One job, or None after recording its problems; and the trace's time kind."""
    before = problems.total

    def cell(name: str) -> str:
        position = index.get(name)
        return row[position].strip() if position is not None else ""

    tainted = control_cells(row, index, line, problems)
    job_id = cell("job_id")
    if not job_id:
        problems.add(line, "job_id", "empty job_id")
    for column in ("job_id", "org", "gpu_model"):
        if column not in tainted:
            check_name(cell(column), column, line, problems)
    org = _org(cell("org"), line, problems, limits.members)
    submit, time_kind = _submit_time(cell("submit_time"), line, time_kind, problems)
    duration = _duration(cell("duration_s"), line, problems)
    num_pods = _count(cell("num_pods"), "num_pods", line, problems)
    gpus_per_pod = _count(cell("gpus_per_pod"), "gpus_per_pod", line, problems)
    if num_pods is not None and gpus_per_pod is not None and limits.max_gang_gpus is not None:
        _check_gang_size(num_pods, gpus_per_pod, limits.max_gang_gpus, line, problems)
    gpu_model = _gpu_model(cell("gpu_model") or None, line, problems, limits.gpu_models)
    priority = _priority(cell("priority"), line, problems)
    checkpointable = _checkpointable(cell("checkpointable"), line, problems)

    if problems.total > before:
        return None, time_kind
    assert submit is not None and duration is not None
    assert num_pods is not None and gpus_per_pod is not None
    if limits.node_gpus is not None:
        unfit = limits.unfit(num_pods, gpus_per_pod, gpu_model)
        if unfit is not None:
            problems.add(line, unfit[0], unfit[1])
            return None, time_kind
    job = TraceJob(
        job_id=job_id,
        org=org,
        submit_time=submit,
        duration_s=duration,
        num_pods=num_pods,
        gpus_per_pod=gpus_per_pod,
        gpu_model=gpu_model,
        priority=priority,
        checkpointable=checkpointable,
    )
    return job, time_kind


def control_cells(
    row: Sequence[str], index: Mapping[str, int], line: int, problems: IssueCollector
) -> set[str]:
    """The columns whose cell, as written, holds a control character, each recorded.
    Checked before the spaces around a value are trimmed: `str.strip` also removes
    \x0b, \x0c and \x1c-\x1f, and a name ending in one passed as the name without it."""
    found: set[str] = set()
    for column, position in index.items():
        control = CONTROL.search(row[position]) if position < len(row) else None
        if control is not None:
            problems.add(line, column, f"control character {control.group()!r} in the cell")
            found.add(column)
    return found


def blank_row_control(row: Sequence[str], line: int, problems: IssueCollector) -> None:
    """A row of spaces is skipped; one of control characters (\x0c, \x1c) is refused."""
    control = next((c for c in map(CONTROL.search, row) if c is not None), None)
    if control is not None:
        problems.add(line, None, f"control character {control.group()!r} in a blank row")


def check_name(text: str, column: str, line: int | None, problems: IssueCollector) -> None:
    """Names travel into Kubernetes objects, logs and the API: printable, and not long."""
    if CONTROL.search(text):
        problems.add(line, column, "control character (such as NUL or a tab) in the name")
    elif len(text) > MAX_NAME_CHARS:
        problems.add(line, column, f"longer than {MAX_NAME_CHARS} characters")


def _org(org: str, line: int, problems: IssueCollector, members: set[str] | None) -> str:
    """The member that submits the job, which the policy must know when one is given."""
    if not org:
        problems.add(line, "org", "empty org (the member that submits the job)")
    elif members is not None and org not in members:
        problems.add(line, "org", f"unknown member {org!r} (members: {', '.join(sorted(members))})")
    return org


def _submit_time(
    raw_time: str, line: int, time_kind: str | None, problems: IssueCollector
) -> tuple[float | None, str | None]:
    """(submission time, the trace's time kind): the first readable row fixes the kind
    ("seconds" or "iso") and every later row must use it."""
    submit = finite_number(raw_time)
    kind = "seconds" if submit is not None else None
    if submit is None:
        submit = _iso_epoch(raw_time)
        kind = "iso" if submit is not None else None
    if submit is None or kind is None:
        problems.add(line, "submit_time", f"{raw_time!r} is neither seconds nor an ISO-8601 time")
    elif time_kind is not None and kind != time_kind:
        problems.add(
            line,
            "submit_time",
            f"{raw_time!r} is {'ISO-8601' if kind == 'iso' else 'seconds'} but earlier rows "
            f"use {'ISO-8601' if time_kind == 'iso' else 'seconds'}; use one kind for all rows",
        )
    elif kind == "seconds" and submit < 0:
        problems.add(line, "submit_time", f"negative time {raw_time}")
    elif kind == "seconds" and submit > MAX_SECONDS:
        problems.add(line, "submit_time", f"{raw_time} s is beyond {MAX_SECONDS:,.0f} s")
    elif kind == "iso" and not FIRST_INSTANT.timestamp() <= submit < END_INSTANT.timestamp():
        problems.add(line, "submit_time", f"{raw_time!r} is not in {YEARS}")
    if time_kind is None and kind is not None:
        time_kind = kind
    return submit, time_kind


def _duration(raw_duration: str, line: int, problems: IssueCollector) -> float | None:
    duration = finite_number(raw_duration)
    if duration is None:
        problems.add(line, "duration_s", f"{raw_duration!r} is not a number of seconds")
    elif duration <= 0:
        problems.add(line, "duration_s", f"duration must be > 0, got {raw_duration}")
    elif duration > MAX_SECONDS:
        problems.add(
            line, "duration_s", f"duration {raw_duration} s is beyond {MAX_SECONDS:,.0f} s"
        )
    return duration


def _check_gang_size(
    num_pods: int, gpus_per_pod: int, max_gang_gpus: int, line: int, problems: IssueCollector
) -> None:
    """A job asking for more GPUs than the whole cluster has can never run."""
    gpus = num_pods * gpus_per_pod
    if gpus > max_gang_gpus:
        what = "gang" if num_pods > 1 else "job"
        problems.add(
            line,
            "num_pods" if num_pods > 1 else "gpus_per_pod",
            f"{what} of {num_pods} x {gpus_per_pod} = {gpus} GPUs is larger than the "
            f"cluster ({max_gang_gpus} GPUs)",
        )


def _gpu_model(
    gpu_model: str | None, line: int, problems: IssueCollector, gpu_models: set[str] | None
) -> str | None:
    if gpu_model is not None and gpu_models is not None and gpu_model not in gpu_models:
        problems.add(
            line,
            "gpu_model",
            f"unknown GPU model {gpu_model!r} (cluster has: {', '.join(sorted(gpu_models))})",
        )
    return gpu_model


def _priority(raw_priority: str, line: int, problems: IssueCollector) -> int:
    """The job's priority; 0 when the cell is empty."""
    if not raw_priority:
        return 0
    parsed = whole_number(raw_priority)
    if parsed is None:
        problems.add(line, "priority", f"{raw_priority!r} is not an integer")
        return 0
    low, high = PRIORITY_RANGE
    if not low <= parsed <= high:
        problems.add(line, "priority", f"{raw_priority} is outside {low} to {high} (int32)")
        return 0
    return parsed


def _checkpointable(text: str, line: int, problems: IssueCollector) -> bool | None:
    """Whether the job resumes when preempted; None (its member decides) when empty."""
    if not text:
        return None
    value = {"true": True, "false": False}.get(text.lower())
    if value is None:
        problems.add(line, "checkpointable", f"{text!r} is neither 'true' nor 'false'")
    return value


def _count(text: str, column: str, line: int, problems: IssueCollector) -> int | None:
    value = whole_number(text)
    if value is None:
        problems.add(line, column, f"{text!r} is not a whole number")
        return None
    if value < 1:
        problems.add(line, column, f"must be at least 1, got {text}")
        return None
    if value > MAX_COUNT:
        problems.add(line, column, f"at most {MAX_COUNT:,}, got {text}")
        return None
    return value


def _seconds_text(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def trace_rows(trace: Trace) -> Iterable[list[str]]:
    """The canonical CSV rows (header first). Times are ISO-8601 UTC when the trace has a
    start epoch (so re-reading keeps it), else seconds from trace start. The
    `checkpointable` column only when some job says it."""
    said = any(job.checkpointable is not None for job in trace.jobs)
    yield list(CANONICAL_COLUMNS if said else CANONICAL_COLUMNS[:-1])
    for job in trace.jobs:
        if trace.start_epoch is not None:
            moment = datetime.fromtimestamp(trace.start_epoch + job.submit_time, tz=UTC)
            submit = moment.isoformat()
        else:
            submit = _seconds_text(job.submit_time)
        row = [
            job.job_id,
            job.org,
            submit,
            _seconds_text(job.duration_s),
            str(job.num_pods),
            str(job.gpus_per_pod),
            job.gpu_model or "",
            str(job.priority),
        ]
        if said:
            row.append({None: "", True: "true", False: "false"}[job.checkpointable])
        yield row


def write_trace(trace: Trace, path: str | os.PathLike[str]) -> None:
    """Write `trace` as canonical CSV to `path`: all of it or, on failure, nothing."""
    with open_whole(Path(path), newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(trace_rows(trace))
