"""The daemon tells its starter its ports as whole lines, whatever else it is logging."""

from __future__ import annotations

import io

import pytest

from scheduler.cli import run


class _Writes(io.StringIO):
    """A stdout that keeps each write apart, as an unbuffered pipe does."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return super().write(text)


def test_a_port_line_is_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    # A log line from another thread lands between two writes, never inside one:
    # CI once read `metrics-port 39127{"time": ...` when the newline came separately.
    out = _Writes()
    monkeypatch.setattr("sys.stdout", out)
    run._announce("metrics-port", 39127)
    # click probes the stream with empty writes, which put nothing between two others.
    assert [text for text in out.calls if text] == ["metrics-port 39127\n"]
