"""The chaos run's end count: a gang counts as left partly bound only if it stays so."""

from __future__ import annotations

from tests.chaos.checks import lasting


def test_a_gang_being_bound_when_the_pods_are_listed_is_not_left_partly_bound() -> None:
    samples = [{"ns/a": (5, 8), "ns/b": (1, 2)}, {"ns/b": (1, 2)}, {"ns/b": (1, 2)}]
    assert lasting(samples) == {"ns/b": (1, 2)}


def test_the_last_list_gives_the_counts_of_a_gang_left_partly_bound() -> None:
    assert lasting([{"ns/a": (3, 8)}, {"ns/a": (5, 8)}]) == {"ns/a": (5, 8)}


def test_a_gang_partly_bound_again_later_is_not_one_left_so() -> None:
    assert lasting([{"ns/a": (3, 8)}, {}, {"ns/a": (2, 8)}]) == {}
    assert lasting([]) == {}
