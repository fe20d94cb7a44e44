"""The quick loop's share of random cases: read from the environment, refused when wrong."""

from __future__ import annotations

import pytest

from tests import examples


def test_every_case_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(examples.SHARE_VARIABLE, raising=False)
    assert examples.examples(300) == 300


def test_a_share_keeps_at_least_five(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(examples.SHARE_VARIABLE, "0.4")
    assert examples.examples(300) == 120
    assert examples.examples(12) == 5
    assert examples.examples(3) == 3


@pytest.mark.parametrize("raw", ["0", "1.5", "-1", "a third"])
def test_a_wrong_share_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(examples.SHARE_VARIABLE, raw)
    with pytest.raises(ValueError, match="FAIRPOOL_EXAMPLES"):
        examples.examples(10)
