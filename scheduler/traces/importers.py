"""Importers of public GPU-cluster traces into fairpool's Trace.

- Microsoft Philly `cluster_job_log` (JSON list of jobs; msr-fiddle/philly-traces):
  a job's run is its last scheduling attempt; each machine in that attempt's `detail`
  is one pod, holding the GPUs listed for it (in one entry or several).
- SenseTime Helios `cluster_log.csv` (S-Lab-System-Group/HeliosData): `gpu_num` GPUs on
  `node_num` nodes becomes `node_num` pods of `gpu_num / node_num` GPUs.

Both map a virtual cluster (`vc`) to a member through a member map; without one, each
virtual cluster names a member by the rule of `scheduler.traces.members`. Jobs that cannot be
replayed (no GPUs, never started, uneven pods, unmapped virtual cluster) are skipped and
counted by reason; malformed input (a time that cannot be read, a GPU of a machine
listed twice in one attempt) raises TraceError naming the line and field.

Times in these traces carry no zone; they are read in `tz` (UTC unless told)."""

from __future__ import annotations

import contextlib
import csv
import json
import os
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from policies.errors import PolicyError
from policies.instants import END_INSTANT, FIRST_INSTANT, YEARS
from policies.yamldoc import line_of, parse_yaml
from scheduler.traces.csv import (
    CONTROL,
    MAX_COUNT,
    MAX_NAME_CHARS,
    MAX_SECONDS,
    blank_row_control,
    check_name,
    control_cells,
    finite_number,
    utf8_lines,
    whole_number,
)
from scheduler.traces.errors import IssueCollector, TraceError, TraceIssue
from scheduler.traces.members import member_name_of, member_name_problem
from scheduler.traces.model import Trace, TraceJob

UTC_ZONE = ZoneInfo("UTC")

# Reasons a job is skipped (the keys of ImportReport.skipped).
NO_GPUS = "no GPUs"
NEVER_STARTED = "never started"
NOT_FINISHED = "no end time (still running or not logged)"
NON_POSITIVE_DURATION = "zero or negative run time"
UNEVEN_PODS = "GPUs not evenly spread over nodes"
UNMAPPED = "virtual cluster not in the member map"
NO_ENTRY = (
    "maps no virtual cluster to a member (leave --member-map out to name members after "
    "the virtual clusters)"
)


MAP_FORMS = "(vc=member,... or a YAML file)"


@dataclass
class ImportReport:
    """What an import did: the trace and how many jobs were skipped, by reason."""

    trace: Trace
    source: str
    read: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    unmapped_vcs: Counter[str] = field(default_factory=Counter)
    renamed: dict[str, str] = field(default_factory=dict)
    """Virtual cluster -> the member named after it, where the names differ (no map)."""

    @property
    def imported(self) -> int:
        return len(self.trace.jobs)


@dataclass(frozen=True)
class MemberMap:
    """Virtual cluster -> member. Without entries every virtual cluster names a member
    (`member_name_of`); `strict` turns an unmapped virtual cluster into an error instead
    of a skipped job."""

    mapping: Mapping[str, str] = field(default_factory=dict)
    strict: bool = False

    def member_for(self, vc: str) -> str | None:
        if not self.mapping:
            return member_name_of(vc)
        return self.mapping.get(vc)


def parse_member_map(spec: str | os.PathLike[str] | None, strict: bool = False) -> MemberMap:
    """A member map from a YAML file (`vc: member` pairs, or a `members:` mapping of
    member -> list of virtual clusters), or from text `vc=member[,vc=member...]`."""
    if spec is None:
        return MemberMap(strict=strict)
    text = str(spec)
    path = Path(text)
    if "=" not in text and (path.suffix in {".yaml", ".yml", ".json"} or path.exists()):
        found = _member_map_file(path)
        if not found:
            # An empty map read as no map: every job imported under its virtual
            # cluster's name, where a map skips the virtual clusters it does not name.
            raise TraceError(str(path), [TraceIssue(None, None, NO_ENTRY)])
        return MemberMap(found, strict)
    mapping: dict[str, str] = {}
    issues: list[TraceIssue] = []
    for part in text.split(","):
        pair = part.strip()
        if not pair:
            continue
        vc, sep, member = (s.strip() for s in pair.partition("="))
        if CONTROL.search(part):
            # Checked before the spaces are trimmed, which take \x0b and \x1c-\x1f too.
            issues.append(TraceIssue(None, "--member-map", f"control character in {part!r}"))
        elif not sep or not vc or not member or "=" in member:
            issues.append(TraceIssue(None, "--member-map", f"{pair!r} is not vc=member"))
        elif vc in mapping and mapping[vc] != member:
            issues.append(TraceIssue(None, "--member-map", f"{vc!r} mapped twice"))
        elif problem := member_name_problem(member):
            issues.append(TraceIssue(None, "--member-map", f"{pair!r}: {problem}"))
        else:
            mapping[vc] = member
    if not mapping and not issues:
        issues.append(TraceIssue(None, "--member-map", NO_ENTRY))
    if issues:
        raise TraceError("member map", issues)
    return MemberMap(mapping, strict)


def _plain_name(value: object) -> bool:
    """A name `trace check` takes: text or a number, not empty, printable, not long."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        return False
    text = str(value)
    return bool(text.strip()) and not CONTROL.search(text) and len(text) <= MAX_NAME_CHARS


def _as_written(node: yaml.Node | None) -> Any:
    """The document with every scalar as the text it was written as: names, not what
    YAML 1.1 reads into them (`007:` was the virtual cluster "7", `on:` was "True")."""
    if isinstance(node, yaml.MappingNode):
        return {_as_written(k): _as_written(v) for k, v in node.value}
    if isinstance(node, yaml.SequenceNode):
        return [_as_written(item) for item in node.value]
    if isinstance(node, yaml.ScalarNode) and node.tag != "tag:yaml.org,2002:null":
        return node.value
    return None


def _member_map_file(path: Path) -> dict[str, str]:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TraceError(source, [TraceIssue(None, None, f"cannot read: {exc.strerror}")]) from exc
    except UnicodeDecodeError as exc:
        raise TraceError(source, [TraceIssue(None, None, "not UTF-8 text")]) from exc
    try:
        # The policy's reader: bounded size and depth (deep nesting was a RecursionError).
        _, node = parse_yaml(text, source)
    except PolicyError as exc:
        raise TraceError(source, [TraceIssue(i.line, None, i.message) for i in exc.issues]) from exc
    data = _as_written(node)
    grouped = isinstance(data, dict) and set(data) == {"members"}
    if grouped and not isinstance(data["members"], dict):
        # `members: acme` was read as the pair vc "members" -> member "acme": every job
        # skipped as unmapped, and the error blamed the trace.
        given = data["members"]
        message = (
            f"members: {'empty' if given is None else repr(given)} is not a mapping of "
            "member -> virtual clusters (members: {lab-a: [vc1, vc2]})"
        )
        if isinstance(given, str):
            message += f"; a virtual cluster named 'members': --member-map members={given}"
        raise TraceError(source, [TraceIssue(line_of(node, ["members"]), None, message)])
    if grouped:
        # members: {lab-a: [vc1, vc2], lab-b: vc3}
        mapping: dict[str, str] = {}
        issues: list[TraceIssue] = []
        for member, vcs in data["members"].items():
            if not _plain_name(member):
                # An empty name was taken, and each of its jobs an error on the trace's
                # line instead of this one.
                line = line_of(node, ["members", member])
                issues.append(TraceIssue(line, None, f"members: {member!r} is not a plain name"))
                continue
            if problem := member_name_problem(str(member)):
                line = line_of(node, ["members", member])
                issues.append(TraceIssue(line, None, f"members: {problem}"))
                continue
            listed = vcs if isinstance(vcs, list) else [vcs]
            for i, vc in enumerate(listed):
                where: list[str | int] = ["members", member]
                line = line_of(node, [*where, i] if isinstance(vcs, list) else where)
                if not _plain_name(vc):
                    message = f"members.{member}: a virtual cluster is a plain name"
                    issues.append(TraceIssue(line, None, message))
                elif str(vc) in mapping and mapping[str(vc)] != str(member):
                    # The last member listed would silently win.
                    message = f"members.{member}: {vc!r} is also listed under {mapping[str(vc)]!r}"
                    issues.append(TraceIssue(line, None, message))
                else:
                    mapping[str(vc)] = str(member)
        if issues:
            raise TraceError(source, issues)
        return mapping
    if not isinstance(data, dict) or not data:
        raise TraceError(
            source,
            [TraceIssue(None, None, "expected a mapping of virtual cluster -> member")],
        )
    bad = [k for k, v in data.items() if not _plain_name(v)]
    if bad:
        raise TraceError(
            source, [TraceIssue(None, str(k), "member must be a plain name") for k in bad]
        )
    # A member no policy can have (`Lab_A`, `pool`) made a trace no policy can replay.
    named = [(k, member_name_problem(str(v))) for k, v in data.items()]
    if any(problem for _, problem in named):
        raise TraceError(
            source,
            [TraceIssue(line_of(node, [k]), str(k), p) for k, p in named if p is not None],
        )
    return {str(k): str(v) for k, v in data.items()}


def _zone(tz: str | tzinfo | None) -> tzinfo:
    if tz is None:
        return UTC_ZONE
    if isinstance(tz, tzinfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise TraceError("--timezone", [TraceIssue(None, None, f"unknown zone {tz!r}")]) from exc


def _absent(text: Any) -> bool:
    """No time given: the traces write null, "" or "None" for an attempt not started or
    not ended."""
    return text is None or (isinstance(text, str) and text.strip() in ("", "None"))


def _epoch(text: Any, zone: tzinfo) -> float | None:
    """Epoch seconds of a trace time like '2017-10-07 01:12:09', or None if absent/bad."""
    if _absent(text) or not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.timestamp()


def _instant(epoch: float) -> str:
    try:
        return datetime.fromtimestamp(epoch, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return f"{epoch:,.0f} s from 1970"


@dataclass
class _Collected:
    """Jobs with absolute submit times, before they are made relative."""

    jobs: list[TraceJob] = field(default_factory=list)
    seen: dict[str, int | None] = field(default_factory=dict)
    named: dict[str, str] = field(default_factory=dict)
    """Member -> the virtual cluster it was named after (no member map)."""
    refused: set[str] = field(default_factory=set)
    """Virtual clusters that name no member: said once, not once per job."""

    def trace(self) -> Trace:
        if not self.jobs:
            return Trace(jobs=())
        origin = min(j.submit_time for j in self.jobs)
        jobs = sorted(
            (
                TraceJob(
                    job_id=j.job_id,
                    org=j.org,
                    submit_time=j.submit_time - origin,
                    duration_s=j.duration_s,
                    num_pods=j.num_pods,
                    gpus_per_pod=j.gpus_per_pod,
                )
                for j in self.jobs
            ),
            key=lambda j: (j.submit_time, j.job_id),
        )
        return Trace(jobs=tuple(jobs), start_epoch=origin)


def _finish(
    report: ImportReport, collected: _Collected, problems: IssueCollector, members: MemberMap
) -> ImportReport:
    if members.strict and report.unmapped_vcs:
        for vc, count in sorted(report.unmapped_vcs.items()):
            problems.add(None, "vc", f"virtual cluster {vc!r} ({count} jobs) is not mapped")
    problems.raise_if_any()
    report.trace = collected.trace()
    for job in report.trace.jobs:
        if job.submit_time > MAX_SECONDS:
            problems.add(
                collected.seen[job.job_id],
                None,
                f"submitted {job.submit_time:,.0f} s after the first job, beyond "
                f"{MAX_SECONDS:,.0f} s",
            )
    problems.raise_if_any()
    if not report.trace.jobs:
        reasons = ", ".join(f"{n} {r}" for r, n in report.skipped.most_common()) or "none read"
        raise TraceError(report.source, [TraceIssue(None, None, f"no jobs imported ({reasons})")])
    return report


def _add_job(
    report: ImportReport,
    collected: _Collected,
    problems: IssueCollector,
    line: int | None,
    job_id: str,
    vc: str,
    members: MemberMap,
    submit: float,
    duration: float,
    num_pods: int,
    gpus_per_pod: int,
) -> None:
    if not job_id:
        problems.add(line, "job_id", "empty job id")
        return
    before = problems.total
    check_name(job_id, "job_id", line, problems)
    if problems.total > before:
        return
    member = members.member_for(vc)
    if member is None:
        report.unmapped_vcs[vc] += 1
        report.skipped[UNMAPPED] += 1
        return
    if not members.mapping and not _named_after(vc, member, line, report, collected, problems):
        return
    # The member is the trace's org: held to the rules `trace check` holds it to, or
    # the import wrote a trace its own reader refuses.
    if not member:
        problems.add(line, "vc", "empty member name (map the virtual cluster with --member-map)")
        return
    check_name(member, "vc", line, problems)
    if problems.total > before:
        return
    if job_id in collected.seen:
        first = collected.seen[job_id]
        where = f" (first on line {first})" if first is not None else ""
        problems.add(line, "job_id", f"duplicate job id {job_id!r}{where}")
        return
    # What the trace format holds: an imported trace is one its own reader takes
    # (`trace check` refused year-1 times and 1e300 GPUs that import wrote).
    if not FIRST_INSTANT.timestamp() <= submit < END_INSTANT.timestamp():
        problems.add(line, None, f"submitted at {_instant(submit)}, not in {YEARS}")
        return
    if duration > MAX_SECONDS:
        problems.add(line, None, f"runs {duration:,.0f} s, beyond {MAX_SECONDS:,.0f} s")
        return
    if max(num_pods, gpus_per_pod) > MAX_COUNT:
        problems.add(
            line, None, f"{num_pods} pod(s) of {gpus_per_pod} GPUs: at most {MAX_COUNT:,} each"
        )
        return
    collected.seen[job_id] = line
    collected.jobs.append(
        TraceJob(
            job_id=job_id,
            org=member,
            submit_time=submit,
            duration_s=duration,
            num_pods=num_pods,
            gpus_per_pod=gpus_per_pod,
        )
    )


def _shown(name: str) -> str:
    """A name as quoted in a message: a long one cut, as a message is read on one line."""
    return repr(name) if len(name) <= 40 else f"{name[:40]!r}..."


def _named_after(
    vc: str,
    member: str,
    line: int | None,
    report: ImportReport,
    collected: _Collected,
    problems: IssueCollector,
) -> bool:
    """Whether the member named after `vc` is one a policy can have, and no other
    virtual cluster's; else an error on the virtual cluster's first line naming the
    option that names its member instead."""
    if vc in collected.refused:
        return False
    problem = member_name_problem(member)
    first = collected.named.setdefault(member, vc)
    if problem is not None:
        message = f"virtual cluster {_shown(vc)} names no member: {problem}"
    elif first != vc:
        message = (
            f"virtual clusters {_shown(first)} and {_shown(vc)} would both be member {member!r}"
        )
    else:
        if member != vc:
            report.renamed[vc] = member
        return True
    collected.refused.add(vc)
    problems.add(line, "vc", f"{message}; name the members with --member-map {MAP_FORMS}")
    return False


# --- Philly ------------------------------------------------------------------------


def _json_array_items(text: str, source: str) -> Iterator[tuple[int, Any]]:
    """(line, item) for each element of a top-level JSON array, so that problems in a
    job can name the line where the job starts."""
    decoder = json.JSONDecoder()
    length = len(text)
    position = 0
    line = 1

    def skip_space(at: int) -> int:
        while at < length and text[at] in " \t\r\n":
            at += 1
        return at

    def fail(at: int, message: str) -> TraceError:
        where = text.count("\n", 0, at) + 1
        return TraceError(source, [TraceIssue(where, None, message)])

    position = skip_space(0)
    if position >= length or text[position] != "[":
        raise fail(position, "expected a JSON list of jobs ('[' ...)")
    position = skip_space(position + 1)
    counted_to = 0
    if position < length and text[position] == "]":
        return
    while True:
        line += text.count("\n", counted_to, position)
        counted_to = position
        try:
            item, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise TraceError(
                source, [TraceIssue(exc.lineno, None, f"not valid JSON: {exc.msg}")]
            ) from exc
        except RecursionError as exc:  # was a traceback
            raise fail(position, "a job nested too deeply to be one") from exc
        yield line, item
        position = skip_space(end)
        if position < length and text[position] == ",":
            position = skip_space(position + 1)
            continue
        if position < length and text[position] == "]":
            return
        raise fail(position, "expected ',' or ']' after a job")


def import_philly(
    path: str | os.PathLike[str],
    member_map: MemberMap | None = None,
    tz: str | tzinfo | None = None,
) -> ImportReport:
    """Read a Philly `cluster_job_log` file."""
    source = str(path)
    members = member_map or MemberMap()
    zone = _zone(tz)
    try:
        # utf-8-sig: a byte-order mark was "expected a JSON list of jobs".
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise TraceError(source, [TraceIssue(None, None, f"cannot read: {exc.strerror}")]) from exc
    except UnicodeDecodeError as exc:
        raise TraceError(source, [TraceIssue(None, None, "not UTF-8 text")]) from exc
    problems = IssueCollector(source)
    report = ImportReport(trace=Trace(jobs=()), source=source)
    collected = _Collected()
    for index, (line, job) in enumerate(_json_array_items(text, source)):
        report.read += 1
        _philly_job(index, line, job, report, collected, problems, members, zone)
    return _finish(report, collected, problems, members)


def _philly_job(
    index: int,
    line: int,
    job: Any,
    report: ImportReport,
    collected: _Collected,
    problems: IssueCollector,
    members: MemberMap,
    zone: tzinfo,
) -> None:
    where = f"[{index}]"
    if not isinstance(job, dict):
        problems.add(line, where, "a job must be a JSON object")
        return
    missing = [k for k in ("jobid", "vc", "submitted_time", "attempts") if k not in job]
    if missing:
        problems.add(line, f"{where}.{missing[0]}", f"missing key(s) {', '.join(missing)}")
        return
    nulls = [k for k in ("jobid", "vc") if job[k] is None or isinstance(job[k], dict | list)]
    if nulls:
        # str() made null the job id "None".
        problems.add(line, f"{where}.{nulls[0]}", f"{job[nulls[0]]!r} is not a name")
        return
    job_id, vc = str(job["jobid"]), str(job["vc"])
    submit = _epoch(job["submitted_time"], zone)
    if submit is None:
        problems.add(line, f"{where}.submitted_time", f"{job['submitted_time']!r} is not a time")
        return
    attempts = job["attempts"]
    if not isinstance(attempts, list):
        problems.add(line, f"{where}.attempts", "must be a list")
        return
    if not attempts:
        report.skipped[NEVER_STARTED] += 1
        return
    last = attempts[-1]
    if not isinstance(last, dict):
        problems.add(line, f"{where}.attempts[{len(attempts) - 1}]", "must be an object")
        return
    for key in ("start_time", "end_time"):
        if not _absent(last.get(key)) and _epoch(last.get(key), zone) is None:
            # A time that cannot be read is an error, not a job that never ran.
            field = f"{where}.attempts[{len(attempts) - 1}].{key}"
            problems.add(line, field, f"{last.get(key)!r} is not a time")
            return
    start = _epoch(last.get("start_time"), zone)
    end = _epoch(last.get("end_time"), zone)
    if start is None:
        report.skipped[NEVER_STARTED] += 1
        return
    if end is None:
        report.skipped[NOT_FINISHED] += 1
        return
    detail = last.get("detail") or []
    if not isinstance(detail, list) or not all(
        isinstance(d, dict) and isinstance(d.get("gpus", []), list) for d in detail
    ):
        problems.add(
            line, f"{where}.attempts[{len(attempts) - 1}].detail", "must be a list of machines"
        )
        return
    twice = _gpu_listed_twice(detail)
    if twice is not None:
        # Counted as two GPUs (or a second pod) it made the job bigger than it ran.
        machine_at, gpu_at, ip, gpu = twice
        field = f"{where}.attempts[{len(attempts) - 1}].detail[{machine_at}].gpus[{gpu_at}]"
        problems.add(line, field, f"GPU {gpu!r} of machine {ip!r} is listed twice")
        return
    per_machine = [n for n in _gpus_per_machine(detail) if n > 0]
    if not per_machine:
        report.skipped[NO_GPUS] += 1
        return
    if len(set(per_machine)) > 1:
        report.skipped[UNEVEN_PODS] += 1
        return
    if end <= start:
        report.skipped[NON_POSITIVE_DURATION] += 1
        return
    _add_job(
        report,
        collected,
        problems,
        line,
        job_id,
        vc,
        members,
        submit,
        end - start,
        len(per_machine),
        per_machine[0],
    )


def _gpus_per_machine(detail: list[dict[str, Any]]) -> list[int]:
    """The GPUs an attempt holds on each machine: a machine in two entries of `detail`
    is one pod (it was two, on one machine). An entry without an ip is its own machine."""
    held: dict[str, int] = {}
    for at, machine in enumerate(detail):
        ip = machine.get("ip")
        key = f"#{at}" if ip is None else json.dumps(ip, sort_keys=True)
        held[key] = held.get(key, 0) + len(machine.get("gpus") or [])
    return list(held.values())


def _gpu_listed_twice(detail: list[dict[str, Any]]) -> tuple[int, int, Any, Any] | None:
    """(machine index, GPU index, ip, GPU id) of the first GPU an attempt lists again,
    on the same machine (in one entry or two), or None."""
    seen: set[str] = set()
    for machine_at, machine in enumerate(detail):
        ip = machine.get("ip")
        for gpu_at, gpu in enumerate(machine.get("gpus") or []):
            key = json.dumps([ip, gpu], sort_keys=True)
            if key in seen:
                return machine_at, gpu_at, ip, gpu
            seen.add(key)
    return None


# --- Helios ------------------------------------------------------------------------

HELIOS_REQUIRED = ("job_id", "vc", "gpu_num", "node_num", "submit_time")
HELIOS_READ = (*HELIOS_REQUIRED, "start_time", "end_time", "duration")
HELIOS_KNOWN = (
    "job_id",
    "user",
    "vc",
    "jobname",
    "gpu_num",
    "cpu_num",
    "node_num",
    "state",
    "submit_time",
    "start_time",
    "end_time",
    "duration",
    "queue",
)


def import_helios(
    path: str | os.PathLike[str],
    member_map: MemberMap | None = None,
    tz: str | tzinfo | None = None,
) -> ImportReport:
    """Read a Helios `cluster_log.csv` file. Run time is `duration`, else end - start."""
    source = str(path)
    members = member_map or MemberMap()
    zone = _zone(tz)
    problems = IssueCollector(source)
    report = ImportReport(trace=Trace(jobs=()), source=source)
    collected = _Collected()
    lines = utf8_lines(Path(path))
    with contextlib.closing(lines):
        reader = csv.reader(lines)
        try:
            written = next(reader, [])
        except csv.Error as exc:
            raise TraceError(source, [TraceIssue(1, None, f"not CSV: {exc}")]) from exc
        header = [c.strip() for c in written]
        index = {name: i for i, name in enumerate(header)}
        control_cells(written, index, 1, problems)
        for name in sorted({n for n in header if header.count(n) > 1}):
            problems.add(1, name, "column appears twice")
        missing = [c for c in HELIOS_REQUIRED if c not in index]
        if "duration" not in index and not {"start_time", "end_time"} <= set(index):
            missing.append("duration (or start_time and end_time)")
        for name in missing:
            problems.add(1, name, "missing required column")
        extra = [c for c in header if c not in HELIOS_KNOWN]
        if extra:
            problems.add(1, ", ".join(extra), f"unknown column(s) {', '.join(extra)}")
        problems.raise_if_any()
        ended = reader.line_num
        try:
            for row in reader:
                # Named by the line it starts on, as `fairpool trace check` names rows: the
                # reader counts to a row's last line (a quote left open runs on).
                line, ended = ended + 1, reader.line_num
                if not row or all(not c.strip() for c in row):
                    blank_row_control(row, line, problems)
                    continue
                report.read += 1
                _helios_row(row, line, index, report, collected, problems, members, zone)
        except csv.Error as exc:
            problems.add(reader.line_num, None, f"not CSV: {exc}")
    return _finish(report, collected, problems, members)


def _helios_row(
    row: list[str],
    line: int,
    index: dict[str, int],
    report: ImportReport,
    collected: _Collected,
    problems: IssueCollector,
    members: MemberMap,
    zone: tzinfo,
) -> None:
    if len(row) != len(index):
        problems.add(line, None, f"{len(row)} fields, the header has {len(index)}")
        return

    def cell(name: str) -> str:
        position = index.get(name)
        return row[position].strip() if position is not None else ""

    before = problems.total
    # Only the cells read: a tab in a job's name or user is not the import's business.
    control_cells(row, {k: v for k, v in index.items() if k in HELIOS_READ}, line, problems)
    counts: dict[str, int] = {}
    for name in ("gpu_num", "node_num"):
        # int(float(...)) took '1.5' as 1 and 'inf' as an OverflowError traceback.
        count = whole_number(cell(name))
        if count is None or count < 0:
            problems.add(line, name, f"{cell(name)!r} is not a whole number >= 0")
        elif count > MAX_COUNT:
            problems.add(line, name, f"at most {MAX_COUNT:,}, got {cell(name)}")
        else:
            counts[name] = count
    submit = _epoch(cell("submit_time"), zone)
    if submit is None:
        problems.add(line, "submit_time", f"{cell('submit_time')!r} is not a time")
    duration: float | None = None
    if cell("duration"):
        duration = finite_number(cell("duration"))  # nan and inf reached the trace
        if duration is None:
            problems.add(line, "duration", f"{cell('duration')!r} is not a number")
    else:
        start, end = _epoch(cell("start_time"), zone), _epoch(cell("end_time"), zone)
        for name, value in (("start_time", start), ("end_time", end)):
            if value is None and not _absent(cell(name)):
                problems.add(line, name, f"{cell(name)!r} is not a time")
        if start is not None and end is not None:
            duration = end - start
    if problems.total > before or submit is None:
        return
    gpus, nodes = counts["gpu_num"], counts["node_num"]
    if gpus <= 0:
        report.skipped[NO_GPUS] += 1
        return
    if duration is None or (not cell("start_time") and "start_time" in index):
        report.skipped[NEVER_STARTED] += 1
        return
    if duration <= 0:
        report.skipped[NON_POSITIVE_DURATION] += 1
        return
    nodes = max(nodes, 1)
    if gpus % nodes:
        report.skipped[UNEVEN_PODS] += 1
        return
    _add_job(
        report,
        collected,
        problems,
        line,
        cell("job_id"),
        cell("vc"),
        members,
        submit,
        duration,
        nodes,
        gpus // nodes,
    )
