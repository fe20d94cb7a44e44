"""Importers of the Philly and Helios trace formats, on small hand-made sample files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from policies.model import Member
from scheduler.traces import TraceError, read_trace, write_trace
from scheduler.traces.csv import read_trace_text
from scheduler.traces.importers import (
    NEVER_STARTED,
    NO_GPUS,
    NOT_FINISHED,
    UNEVEN_PODS,
    UNMAPPED,
    MemberMap,
    import_helios,
    import_philly,
    parse_member_map,
)
from scheduler.traces.members import member_name_of

DATA = Path(__file__).parents[1] / "data" / "traces"
PHILLY = DATA / "philly_sample.json"
HELIOS = DATA / "helios_sample.csv"
MAP = DATA / "member_map.yaml"
TO_MAP = "name the members with --member-map (vc=member,... or a YAML file)"
HELIOS_HEADER = (
    "job_id,user,vc,gpu_num,cpu_num,node_num,state,submit_time,start_time,end_time,duration,queue"
)


def test_philly_last_attempt_one_pod_per_machine() -> None:
    report = import_philly(PHILLY, parse_member_map(MAP))
    jobs = {j.job_id: j for j in report.trace.jobs}
    assert set(jobs) == {"application_0001_0001", "application_0001_0002"}
    single = jobs["application_0001_0001"]
    assert (single.org, single.submit_time, single.duration_s) == ("uni-north", 0.0, 3600.0)
    assert (single.num_pods, single.gpus_per_pod) == (1, 1)
    gang = jobs["application_0001_0002"]
    # The first attempt (4 GPUs, 1 min) is ignored: the last one ran 2 h on 2 x 8 GPUs.
    assert (gang.org, gang.submit_time, gang.duration_s) == ("ai-startup", 600.0, 7200.0)
    assert (gang.num_pods, gang.gpus_per_pod) == (2, 8)
    assert report.trace.start_epoch == 1506931200.0  # 2017-10-02 08:00:00 UTC
    assert report.read == 7
    assert report.skipped == {
        NEVER_STARTED: 1,
        NOT_FINISHED: 1,
        UNEVEN_PODS: 1,
        NO_GPUS: 1,
        UNMAPPED: 1,
    }
    assert report.unmapped_vcs == {"vc-gamma": 1}


def test_philly_without_map_keeps_vc_names_and_timezone_shifts() -> None:
    report = import_philly(PHILLY, tz="America/Los_Angeles")
    assert report.trace.members() == ["vc-alpha", "vc-beta", "vc-gamma"]
    assert report.imported == 3
    assert report.trace.start_epoch == 1506931200.0 + 7 * 3600  # PDT is UTC-7


def test_helios_without_map_names_members_a_policy_can_have() -> None:
    # Helios' virtual clusters are named like vcEwI: kept as the trace's orgs, no policy
    # could name them as members (a member's name is a DNS-1123 label).
    report = import_helios(HELIOS)
    assert report.trace.members() == ["vcalpha", "vcbeta", "vcdelta"]
    assert report.renamed == {"vcAlpha": "vcalpha", "vcBeta": "vcbeta", "vcDelta": "vcdelta"}
    for name in report.trace.members():
        Member(name=name)


@pytest.mark.parametrize(
    ("vc", "member"),
    [("lab-a", "lab-a"), ("Lab_A", "lab-a"), ("_vc.1 (old)", "vc-1--old"), ("GPU²", "gpu")],
)
def test_a_virtual_cluster_names_its_member_by_one_rule(vc: str, member: str) -> None:
    assert member_name_of(vc) == member


def test_virtual_clusters_that_name_no_member_or_the_same_one_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "cluster_log.csv"
    rows = [(1, "vc_a"), (2, "vc-a"), (3, "vc-a"), (4, "Pool"), (5, "Pool"), (6, "__")]
    path.write_text(
        f"{HELIOS_HEADER}\n"
        + "".join(
            f"{j},u,{vc},1,1,1,COMPLETED,2020-07-01 09:00:00,2020-07-01 09:00:00,,60,0\n"
            for j, vc in rows
        )
    )
    with pytest.raises(TraceError) as info:
        import_helios(path)
    # Each virtual cluster once, on its first line, however many jobs it has.
    assert [(i.line, i.column, i.message) for i in info.value.issues] == [
        (3, "vc", f"virtual clusters 'vc_a' and 'vc-a' would both be member 'vc-a'; {TO_MAP}"),
        (
            5,
            "vc",
            "virtual cluster 'Pool' names no member: member name 'pool' is reserved: the cost "
            f"report's summary names its row of the pool's totals so; {TO_MAP}",
        ),
        (
            7,
            "vc",
            "virtual cluster '__' names no member: no letter or digit to name a member by; "
            + TO_MAP,
        ),
    ]
    # A map names them as the user chooses.
    mapped = import_helios(path, parse_member_map("vc_a=lab-a,vc-a=lab-b,Pool=lab-c,__=lab-d"))
    assert mapped.trace.members() == ["lab-a", "lab-b", "lab-c", "lab-d"]
    assert mapped.renamed == {}


def test_philly_strict_map_makes_unmapped_vc_an_error() -> None:
    with pytest.raises(TraceError, match="'vc-gamma'"):
        import_philly(PHILLY, parse_member_map(MAP, strict=True))


def test_helios_gpus_spread_over_nodes() -> None:
    report = import_helios(HELIOS, parse_member_map(MAP))
    jobs = {j.job_id: j for j in report.trace.jobs}
    assert set(jobs) == {"5000001", "5000003", "5000005", "5000007"}
    assert (jobs["5000003"].num_pods, jobs["5000003"].gpus_per_pod) == (2, 8)
    assert (jobs["5000005"].num_pods, jobs["5000005"].gpus_per_pod) == (2, 6)
    assert jobs["5000007"].duration_s == 86400.0
    assert jobs["5000003"].submit_time == 120.0
    assert jobs["5000001"].org == "uni-north"
    assert report.read == 8
    assert report.skipped == {NO_GPUS: 1, NEVER_STARTED: 1, UNEVEN_PODS: 1, UNMAPPED: 1}
    assert report.unmapped_vcs == {"vcDelta": 1}


def test_imported_trace_survives_the_canonical_csv(tmp_path: Path) -> None:
    for report in (import_helios(HELIOS), import_philly(PHILLY)):
        path = tmp_path / "trace.csv"
        write_trace(report.trace, path)
        assert read_trace(path) == report.trace


def test_helios_bad_values_name_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "cluster_log.csv"
    path.write_text(
        f"{HELIOS_HEADER}\n"
        "1,u,vcA,1,1,1,COMPLETED,2020-07-01 09:00:00,2020-07-01 09:00:00,,60,0\n"
        "2,u,vcA,one,1,1,COMPLETED,2020-07-01 09:00:00,2020-07-01 09:00:00,,60,0\n"
        "3,u,vcA,1,1,1,COMPLETED,yesterday,2020-07-01 09:00:00,,60,0\n"
        "1,u,vcA,1,1,1,COMPLETED,2020-07-01 09:00:00,2020-07-01 09:00:00,,60,0\n"
    )
    with pytest.raises(TraceError) as info:
        import_helios(path)
    assert {(i.line, i.column) for i in info.value.issues} == {
        (3, "gpu_num"),
        (4, "submit_time"),
        (5, "job_id"),
    }


def test_helios_members_the_trace_cannot_hold_are_named(tmp_path: Path) -> None:
    # The member is the trace's org: import wrote traces with an empty, a 300-character
    # or a tab-holding org that `trace check` then refused.
    path = tmp_path / "cluster_log.csv"
    rows = [
        (1, ""),
        (2, "v" * 300),
        (3, '"a\tb"'),
        (4, "vcA"),
    ]
    path.write_text(
        f"{HELIOS_HEADER}\n"
        + "".join(
            f"{j},u,{vc},1,1,1,COMPLETED,2020-07-01 09:00:00,2020-07-01 09:00:00,,60,0\n"
            for j, vc in rows
        )
    )
    with pytest.raises(TraceError) as info:
        import_helios(path)
    assert [(i.line, i.column, i.message.split(": ", 1)[-1]) for i in info.value.issues] == [
        (2, "vc", f"no letter or digit to name a member by; {TO_MAP}"),
        (3, "vc", f"member 'vvvvvvvvvvvvvvvvvvvv'... would be longer than 63 characters; {TO_MAP}"),
        (4, "vc", "control character '\\t' in the cell"),
    ]


def _helios_row(job: int, gpus: str, submit: str, duration: str) -> str:
    return f"{job},u,vcA,{gpus},1,1,COMPLETED,{submit},2020-07-01 09:00:00,,{duration},0\n"


@pytest.mark.parametrize(
    ("gpus", "submit", "duration", "column", "message"),
    [
        # int(float(...)): an OverflowError traceback, and 1.5 GPUs read as 1.
        ("inf", "2020-07-01 09:00:00", "60", "gpu_num", "'inf' is not a whole number"),
        ("1.5", "2020-07-01 09:00:00", "60", "gpu_num", "'1.5' is not a whole number"),
        ("1e300", "2020-07-01 09:00:00", "60", "gpu_num", "at most 100,000, got 1e300"),
        # Written into the trace, which its own reader then refused.
        ("1", "2020-07-01 09:00:00", "nan", "duration", "'nan' is not a number"),
        ("1", "2020-07-01 09:00:00", "1e12", None, "runs 1,000,000,000,000 s, beyond"),
        ("1", "0001-07-01 09:00:00", "60", None, "submitted at 0001-07-01T09:00:00"),
        ("1", "1975-07-01 09:00:00", "60", None, "s after the first job, beyond 316,224,000 s"),
    ],
)
def test_helios_imports_only_what_a_trace_holds(
    tmp_path: Path, gpus: str, submit: str, duration: str, column: str | None, message: str
) -> None:
    path = tmp_path / "cluster_log.csv"
    path.write_text(
        f"{HELIOS_HEADER}\n"
        + _helios_row(1, "1", "2020-07-01 09:00:00", "60")
        + _helios_row(2, gpus, submit, duration)
    )
    with pytest.raises(TraceError) as info:
        import_helios(path)
    (issue,) = info.value.issues
    where = 2 if "after the first job" in message else 3
    assert (issue.line, issue.column) == (where, column), issue
    assert message in issue.message, issue.message


def test_helios_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "cluster_log.csv"
    path.write_text("job_id,vc,gpu_num,submit_time,duration\n1,vcA,1,2020-07-01 09:00:00,5\n")
    with pytest.raises(TraceError) as info:
        import_helios(path)
    assert (1, "node_num") in {(i.line, i.column) for i in info.value.issues}


@pytest.mark.parametrize("head", [b"job_id,vc\xff\n", b"\xff\xfe garbage\n"])
def test_helios_file_that_is_not_text_is_a_trace_error(tmp_path: Path, head: bytes) -> None:
    # A header that is not UTF-8 used to end in a UnicodeDecodeError traceback.
    path = tmp_path / "cluster_log.csv"
    path.write_bytes(head + b"1,vcA\n")
    with pytest.raises(TraceError, match="not UTF-8 text"):
        import_helios(path)


@pytest.mark.parametrize(
    "text", ["[" * 100_000 + "]" * 100_000, "[" + '{"a":' * 5000 + "1" + "}" * 5000 + "]"]
)
def test_philly_nested_too_deeply_is_a_trace_error(tmp_path: Path, text: str) -> None:
    # It was a RecursionError traceback from the JSON decoder.
    path = tmp_path / "cluster_job_log"
    path.write_text(text)
    with pytest.raises(TraceError, match="nested too deeply"):
        import_philly(path)


def test_philly_malformed_json_and_jobs_name_the_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('[\n  {"jobid": "a",\n   "vc": }\n]\n')
    with pytest.raises(TraceError) as info:
        import_philly(broken)
    assert info.value.issues[0].line == 3
    missing = tmp_path / "missing.json"
    missing.write_text(
        '[\n{"jobid": "a", "vc": "v", "submitted_time": "2017-10-02 08:00:00",'
        ' "attempts": []},\n\n{"jobid": "b", "submitted_time": "2017-10-02 08:00:00",'
        ' "attempts": []}\n]\n'
    )
    with pytest.raises(TraceError) as info:
        import_philly(missing)
    assert [(i.line, i.column) for i in info.value.issues] == [(4, "[1].vc")]


def test_nothing_importable_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "cluster_log.csv"
    path.write_text(
        f"{HELIOS_HEADER}\n1,u,vcA,0,1,1,COMPLETED,2020-07-01 09:00:00,2020-07-01 09:00:00,,60,0\n"
    )
    with pytest.raises(TraceError, match="no jobs imported"):
        import_helios(path)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (("a: " + "[" * 100_000 + "]" * 100_000).encode(), "nesting depth"),
        (b"\xff\xfe: a\n", "not UTF-8 text"),
    ],
)
def test_member_map_file_that_cannot_be_read_is_a_trace_error(
    tmp_path: Path, content: bytes, says: str
) -> None:
    # Both were tracebacks (RecursionError, UnicodeDecodeError).
    path = tmp_path / "map.yaml"
    path.write_bytes(content)
    with pytest.raises(TraceError, match=says):
        parse_member_map(path)


def test_member_map_forms(tmp_path: Path) -> None:
    assert parse_member_map("vc1=lab-a, vc2=lab-b").mapping == {"vc1": "lab-a", "vc2": "lab-b"}
    grouped = tmp_path / "map.yaml"
    grouped.write_text("members:\n  lab-a: [vc1, vc2]\n  lab-b: vc3\n")
    assert parse_member_map(grouped).mapping == {"vc1": "lab-a", "vc2": "lab-a", "vc3": "lab-b"}
    assert MemberMap().member_for("vcX") == "vcx"
    assert MemberMap({"a": "m"}).member_for("vcX") is None
    with pytest.raises(TraceError, match="not vc=member"):
        parse_member_map("vc1=lab-a,vc2")
    with pytest.raises(TraceError, match="'vc1==lab-a' is not vc=member"):
        parse_member_map("vc1==lab-a")
    twice = tmp_path / "twice.yaml"
    twice.write_text("members:\n  lab-a: [vc1, vc2]\n  lab-b: [vc2]\n")
    also = "line 3: members.lab-b: 'vc2' is also listed under 'lab-a'"
    with pytest.raises(TraceError, match=re.escape(also)):
        parse_member_map(twice)
    twice.write_text("vc1: lab-a\nvc1: lab-b\n")
    with pytest.raises(TraceError, match=r"line 2.*key 'vc1' given twice"):
        parse_member_map(twice)
    twice.write_text("members:\n  lab-a: [{x: 1}, null]\n")
    with pytest.raises(TraceError, match="a virtual cluster is a plain name"):
        parse_member_map(twice)
    # Names as written: YAML 1.1 read `007` as 7 and `on` as true ("7", "True").
    typed = tmp_path / "typed.yaml"
    typed.write_text("007: lab-a\non: lab-b\n1.50: lab-c\n")
    assert parse_member_map(typed).mapping == {"007": "lab-a", "on": "lab-b", "1.50": "lab-c"}
    typed.write_text("members:\n  lab-a: [007, off]\n")
    assert parse_member_map(typed).mapping == {"007": "lab-a", "off": "lab-a"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(TraceError, match="mapping"):
        parse_member_map(bad)


@pytest.mark.parametrize("text", ["members:\n  lab-a: []\n", "members: {}\n"])
def test_a_member_map_that_maps_no_virtual_cluster_is_an_error(tmp_path: Path, text: str) -> None:
    """An empty map read as no map: every job was imported under its virtual cluster's
    name, where a map skips the virtual clusters it does not name."""
    path = tmp_path / "map.yaml"
    path.write_text(text)
    with pytest.raises(TraceError, match="maps no virtual cluster to a member"):
        parse_member_map(path)
    with pytest.raises(TraceError, match=r"--member-map.*maps no virtual cluster"):
        parse_member_map(",")


def test_a_member_map_member_that_is_not_a_name_is_an_error_on_its_line(
    tmp_path: Path,
) -> None:
    """An empty member name was taken, and each of its jobs was an error on the trace's
    lines ("empty member name") instead of one on the map's."""
    path = tmp_path / "map.yaml"
    path.write_text('members:\n  lab-a: vc1\n  "": vcAlpha\n')
    with pytest.raises(TraceError, match=re.escape("line 3: members: '' is not a plain name")):
        parse_member_map(path)


def test_a_helios_row_over_several_lines_is_named_by_the_line_it_starts_on(
    tmp_path: Path,
) -> None:
    """The reader's count is a row's last line: a row whose quoted user name holds a line
    break was named by the line after it starts."""
    lines = HELIOS.read_text().splitlines()
    broken = lines[2].replace("uBb02", '"uB\nb02"').replace("2020-07-01 09:01:00", "never", 1)
    path = tmp_path / "cluster_log.csv"
    path.write_text("\n".join([*lines[:2], broken, *lines[3:]]) + "\n")
    with pytest.raises(TraceError) as info:
        import_helios(path)
    assert [(i.line, i.column) for i in info.value.issues] == [(3, "submit_time")]


def _philly_job(jobid: object, start: object, end: object) -> str:
    import json

    attempt = {"start_time": start, "end_time": end, "detail": [{"ip": "m1", "gpus": ["0"]}]}
    return json.dumps(
        {"jobid": jobid, "vc": "v", "submitted_time": "2017-10-02 08:00:00", "attempts": [attempt]}
    )


def test_philly_times_and_ids_that_cannot_be_read_are_errors_not_skips(tmp_path: Path) -> None:
    """A start or end time that is there but cannot be read was skipped as "never
    started" or "no end time"; a null job id became the job "None"; a job id with a tab
    was written into a trace its own reader refuses."""
    path = tmp_path / "log.json"
    jobs = [
        _philly_job("a", "2017/10/02 08:05:30", "2017-10-02 09:00:00"),
        _philly_job("b", "2017-10-02 08:05:30", "10/02/2017 12:00"),
        _philly_job(None, "2017-10-02 08:05:30", "2017-10-02 09:00:00"),
        _philly_job("d\tx", "2017-10-02 08:05:30", "2017-10-02 09:00:00"),
        _philly_job("e", None, None),  # never started: skipped, as before
    ]
    path.write_text("[\n" + ",\n".join(jobs) + "\n]\n")
    with pytest.raises(TraceError) as info:
        import_philly(path)
    assert [(i.line, i.column) for i in info.value.issues] == [
        (2, "[0].attempts[0].start_time"),
        (3, "[1].attempts[0].end_time"),
        (4, "[2].jobid"),
        (5, "job_id"),
    ]


def test_philly_and_text_traces_take_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "log.json"
    path.write_text(
        "\ufeff[\n" + _philly_job("a", "2017-10-02 08:05:30", "2017-10-02 09:00:00") + "\n]\n"
    )
    assert [j.job_id for j in import_philly(path).trace.jobs] == ["a"]
    text = "\ufeffjob_id,org,submit_time,duration_s,num_pods,gpus_per_pod\nj,a,0,60,1,1\n"
    assert [j.job_id for j in read_trace_text(text, "request").jobs] == ["j"]


def test_helios_duplicate_columns_and_negative_counts_are_named(tmp_path: Path) -> None:
    twice = tmp_path / "twice.csv"
    twice.write_text(
        "job_id,vc,gpu_num,node_num,submit_time,duration,vc\n1,v,8,1,2020-07-01 09:00:00,3600,w\n"
    )
    with pytest.raises(TraceError) as info:
        import_helios(twice)
    assert [(i.line, i.column, i.message) for i in info.value.issues] == [
        (1, "vc", "column appears twice")
    ]
    negative = tmp_path / "negative.csv"
    negative.write_text(
        "job_id,vc,gpu_num,node_num,submit_time,duration\n1,v,8,-4,2020-07-01 09:00:00,3600\n"
    )
    with pytest.raises(TraceError) as info:
        import_helios(negative)
    assert [(i.line, i.column) for i in info.value.issues] == [(2, "node_num")]
    bad_end = tmp_path / "bad_end.csv"
    bad_end.write_text(
        "job_id,vc,gpu_num,node_num,submit_time,start_time,end_time\n"
        "1,v,8,1,2020-07-01 09:00:00,2020-07-01 09:00:00,07/01/2020 10:00\n"
    )
    with pytest.raises(TraceError) as info:
        import_helios(bad_end)
    assert [(i.line, i.column) for i in info.value.issues] == [(2, "end_time")]


def test_philly_gpu_listed_twice_is_an_error_naming_it(tmp_path: Path) -> None:
    """The same GPU of the same machine listed twice was counted twice: a 1-GPU job
    imported as 1 pod of 2 GPUs, or as 2 pods of 1 when its machine came twice."""
    import json

    def job(jobid: str, detail: list[dict[str, object]]) -> str:
        attempt = {
            "start_time": "2017-10-02 08:00:30",
            "end_time": "2017-10-02 09:00:30",
            "detail": detail,
        }
        return json.dumps(
            {
                "jobid": jobid,
                "vc": "v",
                "submitted_time": "2017-10-02 08:00:00",
                "attempts": [attempt],
            }
        )

    path = tmp_path / "log.json"
    jobs = [
        job("a", [{"ip": "m1", "gpus": ["gpu0", "gpu0"]}]),
        job("b", [{"ip": "m1", "gpus": ["gpu0"]}, {"ip": "m1", "gpus": ["gpu0"]}]),
        # The same GPU id on two machines is two GPUs.
        job("c", [{"ip": "m1", "gpus": ["gpu0"]}, {"ip": "m2", "gpus": ["gpu0"]}]),
    ]
    path.write_text("[\n" + ",\n".join(jobs) + "\n]\n")
    with pytest.raises(TraceError) as info:
        import_philly(path)
    assert [str(i) for i in info.value.issues] == [
        "line 2, column [0].attempts[0].detail[0].gpus[1]: "
        "GPU 'gpu0' of machine 'm1' is listed twice",
        "line 3, column [1].attempts[0].detail[1].gpus[0]: "
        "GPU 'gpu0' of machine 'm1' is listed twice",
    ]
    path.write_text("[\n" + jobs[2] + "\n]\n")
    (gang,) = import_philly(path).trace.jobs
    assert (gang.num_pods, gang.gpus_per_pod) == (2, 1)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            "members: acme\n",
            "line 1: members: 'acme' is not a mapping of member -> virtual clusters "
            "(members: {lab-a: [vc1, vc2]}); a virtual cluster named 'members': "
            "--member-map members=acme",
        ),
        ("\nmembers: [vc1, vc2]\n", "line 2: members: ['vc1', 'vc2'] is not a mapping"),
        ("members:\n", "line 1: members: empty is not a mapping"),
    ],
)
def test_a_members_key_that_is_not_a_mapping_is_an_error_naming_it(
    tmp_path: Path, text: str, says: str
) -> None:
    """`members: acme` was read as the pair virtual cluster "members" -> member "acme":
    every job of the trace was skipped as unmapped and the error blamed the trace."""
    path = tmp_path / "map.yaml"
    path.write_text(text)
    with pytest.raises(TraceError, match=re.escape(says)):
        parse_member_map(path)
    assert parse_member_map("members=acme").mapping == {"members": "acme"}


def test_helios_control_characters_trimmed_off_a_cell_read_are_refused(tmp_path: Path) -> None:
    """A vc of `vcA\\x1c` was imported as member vcA (str.strip() removes it); the cells
    the import does not read may hold anything."""
    path = tmp_path / "cluster_log.csv"
    submit = "2020-07-01 09:00:00"
    path.write_text(
        f"{HELIOS_HEADER}\n"
        f"1,u,vcA\x1c,1,1,1,COMPLETED,{submit},{submit},,60,0\n"
        f"2,u,vcA,1,1,1,COMPLETED,{submit},{submit},,60\x0b,0\n"
        f"3,u\x1f,vcA,1,1,1,COMPLETED\t,{submit},{submit},,60,0\n"
    )
    with pytest.raises(TraceError) as info:
        import_helios(path)
    assert [str(i) for i in info.value.issues] == [
        r"line 2, column vc: control character '\x1c' in the cell",
        r"line 3, column duration: control character '\x0b' in the cell",
    ]


@pytest.mark.parametrize("text", ["vc1=lab-a\x0b", "\x1cvc1=lab-a", "vc1=lab-a,vc2=lab\tb"])
def test_a_member_map_text_with_a_control_character_is_an_error(text: str) -> None:
    # Trimmed with the spaces, `vc1=lab-a\x0b` mapped vc1 to lab-a; a tab inside the
    # member was an error on each of its jobs' lines instead of the flag's.
    with pytest.raises(TraceError, match=re.escape("column --member-map: control character")):
        parse_member_map(text)


def test_philly_machine_in_two_entries_is_one_pod(tmp_path: Path) -> None:
    """Each machine is one pod: m1 in two entries of 1 GPU each was imported as 2 pods of
    1 GPU (a gang across machines), not 1 pod of 2."""
    import json

    attempt = {
        "start_time": "2017-10-02 08:00:30",
        "end_time": "2017-10-02 09:00:30",
        "detail": [
            {"ip": "m1", "gpus": ["gpu0"]},
            {"ip": "m2", "gpus": ["gpu0", "gpu1"]},
            {"ip": "m1", "gpus": ["gpu1"]},
        ],
    }
    job = {"jobid": "a", "vc": "v", "submitted_time": "2017-10-02 08:00:00", "attempts": [attempt]}
    path = tmp_path / "log.json"
    path.write_text(json.dumps([job]))
    (gang,) = import_philly(path).trace.jobs
    assert (gang.num_pods, gang.gpus_per_pod) == (2, 2)


def test_a_member_map_naming_members_no_policy_can_have_is_an_error(tmp_path: Path) -> None:
    # `vcAlpha=Lab_A` wrote a trace of member "Lab_A", which no policy can name.
    with pytest.raises(TraceError) as info:
        parse_member_map("vcAlpha=Lab_A,vcBeta=pool,vcDelta=lab-d")
    assert [(i.column, i.message) for i in info.value.issues] == [
        ("--member-map", "'vcAlpha=Lab_A': 'Lab_A' is not a member name (a DNS-1123 label)"),
        (
            "--member-map",
            "'vcBeta=pool': member name 'pool' is reserved: the cost report's summary names "
            "its row of the pool's totals so",
        ),
    ]
    pairs = tmp_path / "pairs.yaml"
    pairs.write_text("vcAlpha: lab-a\nvcBeta: Lab_B\n")
    with pytest.raises(TraceError) as info:
        parse_member_map(pairs)
    assert [(i.line, i.column) for i in info.value.issues] == [(2, "vcBeta")]
    assert "'Lab_B' is not a member name" in info.value.issues[0].message
    grouped = tmp_path / "grouped.yaml"
    grouped.write_text("members:\n  lab-a: vcAlpha\n  Lab B: [vcBeta]\n")
    with pytest.raises(TraceError) as info:
        parse_member_map(grouped)
    assert [(i.line, i.message) for i in info.value.issues] == [
        (3, "members: 'Lab B' is not a member name (a DNS-1123 label)")
    ]
