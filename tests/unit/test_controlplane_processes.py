"""Process control of the control plane on small real processes (sh, sleep)."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from tests.controlplane import processes
from tests.controlplane.processes import StartError


def test_a_process_dying_on_start_reports_the_tail_of_its_log(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    record = processes.spawn("x", ["sh", "-c", "seq 1 100; echo boom: bad flag; exit 3"], log)
    with pytest.raises(StartError) as failed:
        processes.wait_ready(record, lambda: False, timeout=10)
    message = str(failed.value)
    assert "x exited during start" in message
    assert "boom: bad flag" in message
    assert "\n60\n" not in message  # only the tail
    assert not failed.value.port_in_use


def test_a_taken_port_is_recognised_for_a_retry(tmp_path: Path) -> None:
    command = ["sh", "-c", "echo 'listen tcp 127.0.0.1:2379: bind: address already in use'; exit 1"]
    record = processes.spawn("etcd", command, tmp_path / "etcd.log")
    with pytest.raises(StartError) as failed:
        processes.wait_ready(record, lambda: False, timeout=10)
    assert failed.value.port_in_use


def test_a_process_that_never_gets_ready_times_out_and_can_be_stopped(tmp_path: Path) -> None:
    record = processes.spawn("slow", ["sh", "-c", "echo waiting; sleep 60"], tmp_path / "s.log")
    with pytest.raises(StartError, match="slow not ready after"):
        processes.wait_ready(record, lambda: False, timeout=0.5)
    assert processes.stop(record)
    assert not record.alive()


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    # The shell ignores SIGTERM, as a wedged server might; its children do not fork away.
    script = "trap '' TERM; sleep 300 & sleep 300 & wait"
    record = processes.spawn("group", ["sh", "-c", script], tmp_path / "g.log")
    processes.wait_ready(record, lambda: len(psutil.Process(record.pid).children()) == 2, 10)
    children = psutil.Process(record.pid).children(recursive=True)
    assert processes.stop(record, grace=1.0)
    _, alive = psutil.wait_procs(children, timeout=5)
    assert alive == []
    assert not record.alive()
    assert not processes.stop(record)  # already stopped: nothing to do


def test_free_port_is_bindable() -> None:
    import socket

    port = processes.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
