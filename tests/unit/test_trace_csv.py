"""The canonical trace CSV: both time kinds, optional columns, every error kind with its
line and column, and the atomic writer."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.errors import InputError
from scheduler.traces import Trace, TraceError, TraceJob, read_trace, write_trace
from scheduler.traces.csv import trace_rows

DATA = Path(__file__).parents[1] / "data" / "traces"
HEADER = "job_id,org,submit_time,duration_s,num_pods,gpus_per_pod"


def where(error: TraceError) -> set[tuple[int | None, str | None]]:
    return {(i.line, i.column) for i in error.issues}


def test_seconds_file_sorted_by_submit_time() -> None:
    trace = read_trace(DATA / "canonical_seconds.csv")
    assert [j.job_id for j in trace.jobs] == ["train-1", "train-2", "eval-3"]
    gang = trace.jobs[1]
    assert (gang.submit_time, gang.duration_s, gang.num_pods, gang.gpus_per_pod) == (
        30.5,
        7200.0,
        2,
        8,
    )
    assert gang.is_gang and gang.gpus == 16
    assert trace.start_epoch is None
    assert all(j.gpu_model is None and j.priority == 0 for j in trace.jobs)


def test_iso_times_any_column_order_and_optional_columns() -> None:
    trace = read_trace(DATA / "canonical_iso.csv")
    # 07:00 naive (UTC) is earliest; 08:00+01:00 is also 07:00 UTC; 07:30Z is 30 min later.
    assert trace.start_epoch == 1772348400.0  # 2026-03-01T07:00:00Z
    by_id = {j.job_id: j for j in trace.jobs}
    assert by_id["a"].submit_time == 0.0
    assert by_id["c"].submit_time == 0.0
    assert by_id["b"].submit_time == 1800.0
    assert [j.job_id for j in trace.jobs] == ["a", "c", "b"]
    assert by_id["a"].gpu_model == "NVIDIA-H100-80GB-HBM3"
    assert by_id["b"].gpu_model is None
    assert (by_id["a"].priority, by_id["b"].priority, by_id["c"].priority) == (0, 5, -1)


def test_text_input_and_blank_lines() -> None:
    trace = read_trace(f"{HEADER}\n\nj1,lab,0,60,1,1\n\n")
    assert len(trace.jobs) == 1


@pytest.mark.parametrize(
    ("row", "column", "fragment"),
    [
        ("j,lab,abc,60,1,1", "submit_time", "neither seconds nor an ISO-8601"),
        ("j,lab,-5,60,1,1", "submit_time", "negative"),
        ("j,lab,0,sixty,1,1", "duration_s", "not a number"),
        ("j,lab,0,-60,1,1", "duration_s", "must be > 0"),
        ("j,lab,0,0,1,1", "duration_s", "must be > 0"),
        ("j,lab,0,nan,1,1", "duration_s", "not a number"),
        ("j,lab,0,60,0,1", "num_pods", "at least 1"),
        ("j,lab,0,60,1,0", "gpus_per_pod", "at least 1"),
        ("j,lab,0,60,1.5,1", "num_pods", "not a whole number"),
        ("j,lab,0,60,two,1", "num_pods", "not a whole number"),
        # Python reads these as numbers; no tool writing a trace means one by them.
        ("j,lab,0,3_600,1,1", "duration_s", "not a number"),
        ("j,lab,0,\uff16\uff10,1,1", "duration_s", "not a number"),
        ("j,lab,\u0663,60,1,1", "submit_time", "neither seconds nor an ISO-8601"),
        ("j,lab,0,60,1_0,1", "num_pods", "not a whole number"),
        ("j,lab,0,60,1,\uff18", "gpus_per_pod", "not a whole number"),
        ("j,lab,0,0x3c,1,1", "duration_s", "not a number"),
        (",lab,0,60,1,1", "job_id", "empty job_id"),
        ("j,,0,60,1,1", "org", "empty org"),
    ],
)
def test_each_bad_value_names_line_and_column(row: str, column: str, fragment: str) -> None:
    text = f"{HEADER}\nok,lab,0,60,1,1\n{row}\n"
    with pytest.raises(TraceError) as info:
        read_trace(text)
    assert where(info.value) == {(3, column)}
    assert fragment in str(info.value)
    assert "line 3, column " + column in str(info.value)


def test_numbers_as_spreadsheets_write_them_are_read() -> None:
    text = f"{HEADER}\na,lab, 1.5e3 , 60.0 ,2.0,+8\nb,lab,7,.5,1e1,1\n"
    b, a = read_trace(text).jobs  # by submission time
    assert (a.submit_time, a.duration_s, a.num_pods, a.gpus_per_pod) == (1500.0, 60.0, 2, 8)
    assert (b.submit_time, b.duration_s, b.num_pods) == (7.0, 0.5, 10)


def test_trace_error_is_an_input_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(f"{HEADER}\nj,lab,0,-1,1,1\n")
    with pytest.raises(InputError) as info:
        read_trace(path)
    assert isinstance(info.value, TraceError)
    assert str(path) in str(info.value)


def test_missing_and_unknown_columns_are_named_on_line_1() -> None:
    text = "job_id,org,submit_time,num_pods,gpus_per_pod,user,queue\nj,lab,0,1,1,u,q\n"
    with pytest.raises(TraceError) as info:
        read_trace(text)
    assert (1, "duration_s") in where(info.value)
    assert (1, "user, queue") in where(info.value)
    assert "unknown column(s) user, queue" in str(info.value)


def test_header_required() -> None:
    with pytest.raises(TraceError) as info:
        read_trace("j1,lab,0,60,1,1\nj2,lab,0,60,1,1\n")
    assert (1, "job_id") in where(info.value)


def test_duplicate_job_id_names_both_lines() -> None:
    text = f"{HEADER}\nj,lab,0,60,1,1\nk,lab,0,60,1,1\nj,lab,5,60,1,1\n"
    with pytest.raises(TraceError) as info:
        read_trace(text)
    assert where(info.value) == {(4, "job_id")}
    assert "first on line 2" in str(info.value)


def test_duplicate_job_id_is_named_beside_the_rows_other_problems() -> None:
    # Every problem at once: a duplicate on a row with another bad cell, or of one, was
    # not said, so the fixed file failed again on it.
    text = f"{HEADER}\nj,lab,0,60,1,1\nj,lab,5,-60,1,1\nk,lab,0,60,0,1\nk,lab,9,60,1,1\n"
    with pytest.raises(TraceError) as info:
        read_trace(text)
    assert where(info.value) == {(3, "duration_s"), (3, "job_id"), (4, "num_pods"), (5, "job_id")}
    assert "first on line 4" in str(info.value)


def test_mixed_time_kinds_rejected() -> None:
    text = f"{HEADER}\nj,lab,0,60,1,1\nk,lab,2026-01-01T00:00:00Z,60,1,1\n"
    with pytest.raises(TraceError) as info:
        read_trace(text)
    assert where(info.value) == {(3, "submit_time")}
    assert "one kind" in str(info.value)


def test_members_models_and_cluster_size_checked_when_given() -> None:
    text = (
        "job_id,org,submit_time,duration_s,num_pods,gpus_per_pod,gpu_model\n"
        "a,lab,0,60,1,1,H100\n"
        "b,stranger,0,60,1,1,H100\n"
        "c,lab,0,60,1,1,TPU\n"
        "d,lab,0,60,4,8,\n"
        "e,lab,0,60,1,64,\n"
    )
    assert len(read_trace(text).jobs) == 5  # nothing to check against
    with pytest.raises(TraceError) as info:
        read_trace(text, members={"lab"}, gpu_models={"H100", "A100"}, max_gang_gpus=16)
    assert where(info.value) == {
        (3, "org"),
        (4, "gpu_model"),
        (5, "num_pods"),
        (6, "gpus_per_pod"),
    }
    message = str(info.value)
    assert "unknown member 'stranger'" in message
    assert "gang of 4 x 8 = 32 GPUs is larger than the cluster (16 GPUs)" in message


def test_all_errors_collected_and_counted_beyond_the_first_twenty() -> None:
    rows = "\n".join(f"j{i},lab,0,-1,1,1" for i in range(30))
    with pytest.raises(TraceError) as info:
        read_trace(f"{HEADER}\n{rows}\n")
    assert info.value.total == 30
    assert len(info.value.issues) == 20
    assert [i.line for i in info.value.issues] == list(range(2, 22))
    assert "and 10 more" in str(info.value)


def test_several_errors_in_one_row_all_reported() -> None:
    with pytest.raises(TraceError) as info:
        read_trace(f"{HEADER}\nj,lab,x,0,0,y\n")
    assert where(info.value) == {
        (2, "submit_time"),
        (2, "duration_s"),
        (2, "num_pods"),
        (2, "gpus_per_pod"),
    }


def test_wrong_field_count_named_by_line() -> None:
    with pytest.raises(TraceError) as info:
        read_trace(f"{HEADER}\nj,lab,0,60,1\n")
    assert where(info.value) == {(2, None)}


def test_a_row_over_several_lines_is_named_by_the_line_it_starts_on() -> None:
    """The reader's count is a row's last line: a quote left open on line 3 was reported
    as "line 4: 1 fields", and line 4's own row was fine."""
    with pytest.raises(TraceError) as info:
        read_trace(f'{HEADER}\nj1,lab,0,60,1,1\n"j2,lab,10,60,1,1\nj3,lab,10,60,1,1\n')
    (issue,) = info.value.issues
    assert issue.line == 3
    assert "a quoted field runs on to line 4: is a quote left open?" in issue.message
    with pytest.raises(TraceError) as info:
        read_trace(f'{HEADER}\nj1,lab,0,60,1,1\nj2,lab,"1\n0",60,1,1\nj3,lab,10,x,1,1\n')
    assert where(info.value) == {(3, "submit_time"), (5, "duration_s")}


def test_empty_trace_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="empty trace"):
        read_trace(f"{HEADER}\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(TraceError, match="empty file"):
        read_trace(empty)
    with pytest.raises(TraceError, match="cannot read"):
        read_trace(tmp_path / "missing.csv")


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    original = read_trace(DATA / "canonical_iso.csv")
    path = tmp_path / "out" / "trace.csv"
    write_trace(original, path)
    assert read_trace(path) == original
    seconds = Trace(
        jobs=(
            TraceJob("x", "lab", 0.0, 90.25, 1, 2),
            TraceJob("y", "lab", 1.5, 60.0, 2, 8, "A100", 3),
        )
    )
    write_trace(seconds, path)
    assert path.read_text().splitlines()[1:] == ["x,lab,0,90.25,1,2,,0", "y,lab,1.5,60,2,8,A100,3"]
    assert read_trace(path) == seconds
    assert [p.name for p in path.parent.iterdir()] == ["trace.csv"]  # no temp file left


def test_iso_times_outside_the_report_years_or_ten_years_apart_are_named() -> None:
    # Year 1 and year 9999 passed `trace check` and ended the replay in a pandas
    # overflow traceback.
    text = f"{HEADER}\nj,lab,0001-01-01T00:00:00,60,1,1\nk,lab,9999-12-31T00:00:00,60,1,1\n"
    with pytest.raises(TraceError) as info:
        read_trace(text)
    assert where(info.value) == {(2, "submit_time"), (3, "submit_time")}
    assert "is not in the years 1970 to 2200" in str(info.value)
    apart = f"{HEADER}\nj,lab,1971-01-01T00:00:00,60,1,1\nk,lab,2199-01-01T00:00:00,60,1,1\n"
    with pytest.raises(TraceError) as info:
        read_trace(apart)
    assert where(info.value) == {(3, "submit_time")}
    assert "after the first submission, beyond 316,224,000 s" in str(info.value)
    edges = f"{HEADER}\nj,lab,1970-01-01T00:00:00Z,60,1,1\nk,lab,1979-12-31T00:00:00Z,60,1,1\n"
    assert read_trace(edges).start_epoch == 0.0
    # A trace that starts at the epoch keeps its dates (0.0 also meant "no dates": it
    # was written back in seconds and replayed in last month).
    assert list(trace_rows(read_trace(edges)))[1][2] == "1970-01-01T00:00:00+00:00"


def test_an_output_path_through_a_file_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("kept\n")
    trace = Trace(jobs=(TraceJob("x", "lab", 0.0, 1.0, 1, 1),))
    with pytest.raises(InputError, match=r"a-file/trace.csv: cannot write there .*a file, not a"):
        write_trace(trace, tmp_path / "a-file" / "trace.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_write_failure_leaves_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text("previous\n")

    # The second job's time cannot be written as ISO-8601: the writer fails half-way.
    bad = Trace(
        jobs=(TraceJob("x", "lab", 0.0, 1.0, 1, 1), TraceJob("y", "lab", 1e30, 1.0, 1, 1)),
        start_epoch=1.0,
    )
    with pytest.raises((OverflowError, ValueError, OSError)):
        write_trace(bad, path)
    assert path.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["trace.csv"]


def test_jobs_that_cannot_fit_the_nodes_are_rejected() -> None:
    nodes = {"H100": [8, 8], "A100": [4, 4, 8]}
    text = (
        "job_id,org,submit_time,duration_s,num_pods,gpus_per_pod,gpu_model\n"
        "ok1,lab,0,60,2,8,H100\n"
        "ok2,lab,0,60,3,4,A100\n"
        "ok3,lab,0,60,2,8,\n"
        "full-node,lab,0,60,1,8,A100\n"
        "wide,lab,0,60,3,8,H100\n"
        "a100-gang,lab,0,60,2,8,A100\n"
        "no-model,lab,0,60,1,16,\n"
        "unknown,lab,0,60,1,1,TPU\n"
    )
    assert len(read_trace(text).jobs) == 8
    with pytest.raises(TraceError) as info:
        read_trace(text, node_gpus=nodes, gpu_models=set(nodes))
    assert where(info.value) == {
        (6, "num_pods"),  # three 8-GPU pods on two H100 nodes
        (7, "num_pods"),  # only one A100 node holds an 8-GPU pod
        (8, "gpus_per_pod"),  # no node has 16 GPUs
        (9, "gpu_model"),
    }
    assert "larger than any node (biggest: 8)" in str(info.value)


def test_checkpointable_column_is_optional_per_job_and_round_trips(tmp_path: Path) -> None:
    header = f"{HEADER},checkpointable"
    trace = read_trace(f"{header}\nj1,lab,0,60,1,1,true\nj2,lab,1,60,1,1,\nj3,lab,2,60,1,1,FALSE\n")
    assert [j.checkpointable for j in trace.jobs] == [True, None, False]
    with pytest.raises(TraceError) as caught:
        read_trace(f"{header}\nj1,lab,0,60,1,1,yes\n")
    assert where(caught.value) == {(2, "checkpointable")}
    assert "neither 'true' nor 'false'" in str(caught.value)
    path = tmp_path / "t.csv"
    write_trace(trace, path)
    assert path.read_text().splitlines()[0].endswith(",priority,checkpointable")
    assert read_trace(path) == trace
    # A trace where no job says it is written without the column, as before.
    plain = read_trace(f"{HEADER}\nj1,lab,0,60,1,1\n")
    write_trace(plain, path)
    assert path.read_text().splitlines()[0].endswith(",gpu_model,priority")


def test_bytes_that_are_not_utf8_name_their_line_and_lone_cr_lines_still_read(
    tmp_path: Path,
) -> None:
    """Decoded by the file object a chunk at a time, a Latin-1 byte on line 1,502 of
    2,000 was "not UTF-8 text" with no line. Lines ending in a lone CR are lines."""
    header = b"job_id,org,submit_time,duration_s,num_pods,gpus_per_pod\n"
    rows = [f"j{i},a,{i},60,1,1\n".encode() for i in range(2000)]
    rows[1500] = b"j1500,caf\xe9,1500,60,1,1\n"
    latin = tmp_path / "latin.csv"
    latin.write_bytes(header + b"".join(rows))
    with pytest.raises(TraceError) as info:
        read_trace(latin)
    assert [i.line for i in info.value.issues] == [1502]
    assert "not UTF-8 text" in info.value.issues[0].message
    old_mac = tmp_path / "cr.csv"
    old_mac.write_bytes(header.replace(b"\n", b"\r") + b"a,a,0,60,1,1\rb,a,5,60,1,1\r")
    assert [j.job_id for j in read_trace(old_mac).jobs] == ["a", "b"]
