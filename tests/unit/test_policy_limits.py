"""Hostile or absurd policy documents end in a PolicyError naming the field and line, in
time linear in their size: sane ranges for every number, bounded nesting, integer length,
document size and member count, valid namespace patterns."""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml

from policies import PolicyError
from policies.loader import DEFAULT_POLICY, parse_policy
from policies.model import MAX_MEMBERS
from policies.yamldoc import MAX_DEPTH, MAX_DOCUMENT_CHARS, parse_yaml


def _document(**member: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DEFAULT_POLICY.read_text())
    data["spec"]["members"][0].update(member)
    return data


def _issues(text: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "draft")
    return [(i.path, i.line, i.message) for i in info.value.issues]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("weight", float("inf")),
        ("weight", float("nan")),
        ("weight", 1e30),
        ("purchased", {"NVIDIA-A100-SXM4-80GB": 10**30}),
        ("maxGpus", 10**20),
        ("lendingLimit", 10**20),
        ("namespaces", ["*"]),
        ("namespaces", ["?*"]),
        ("namespaces", ["Lab_A"]),
        ("namespaces", ["x" * 64]),
        ("namespaces", ["[a-z]*"]),
    ],
)
def test_member_numbers_and_namespaces_out_of_range_name_the_field(
    field: str, value: object
) -> None:
    issues = _issues(yaml.safe_dump(_document(**{field: value})))
    assert any(path.startswith(f"spec.members[0].{field}") for path, _, _ in issues), issues


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("reclaimGracePeriodSeconds", 10**20),
        ("minRuntimeSeconds", 10**12),
        ("maxReclaimsPerJob", 10**9),
        ("reclaimLimitWindowSeconds", -1),
        ("reclaimLimitWindowSeconds", 30 * 86_400 + 1),
        ("reclaimLimitWindowSeconds", "a day"),
        ("usageHalfLifeHours", float("inf")),
        ("usageHalfLifeHours", 1e12),
    ],
)
def test_sharing_numbers_out_of_range_name_the_field(field: str, value: object) -> None:
    data = _document()
    data["spec"]["sharing"][field] = value
    issues = _issues(yaml.safe_dump(data))
    assert [p for p, _, _ in issues] == [f"spec.sharing.{field}"]


def test_namespace_patterns_that_name_a_prefix_are_accepted() -> None:
    policy = parse_policy(yaml.safe_dump(_document(namespaces=["lab-a", "lab-a-*", "x?z"])))
    assert policy.members[0].owns_namespace("lab-a-7")


def test_deep_nesting_is_an_error_with_its_line_not_a_crash() -> None:
    text = "apiVersion: fairpool.io/v1\nkind: Policy\nspec:\n  x: " + "[" * 500 + "]" * 500
    issues = _issues(text)
    assert issues[0][1] is not None and f"deeper than {MAX_DEPTH}" in issues[0][2]
    block = "spec:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 200)) + "  " * 200 + "v"
    assert "deeper than" in _issues(block)[0][2]


def test_huge_integers_are_an_error_with_their_line() -> None:
    text = DEFAULT_POLICY.read_text().replace("weight: 2", "weight: " + "9" * 5000)
    issues = _issues(text)
    line = text.splitlines().index("      weight: " + "9" * 5000) + 1
    assert issues == [("spec.members[2].weight", line, "number with more than 40 characters")]


def test_impossible_dates_are_an_error_with_their_line() -> None:
    text = DEFAULT_POLICY.read_text().replace("weight: 2", "weight: 0000-01-01")
    issues = _issues(text)
    assert len(issues) == 1 and issues[0][1] is not None and "0000-01-01" in issues[0][2]


def test_a_key_given_twice_is_an_error_with_both_lines() -> None:
    # YAML keeps the last: a member's weight written twice, or a second `members:`
    # block, silently replaced the first.
    text = DEFAULT_POLICY.read_text().replace("weight: 2", "weight: 2\n      weight: 5")
    lines = text.splitlines()
    first = lines.index("      weight: 2") + 1
    assert _issues(text) == [
        ("spec.members[2].weight", first + 1, f"key 'weight' given twice (first on line {first})")
    ]
    assert "key 'a' given twice" in _issues("spec: {a: 1, a: 2}\n")[0][2]
    # Not duplicates: a merge key's fields overridden, and keys of different types.
    parse_yaml("base: &b {x: 1}\nm:\n  <<: *b\n  x: 2\n1: a\n'1': b\n", "doc")
    # A mapping used through aliases is reported once.
    many = "a: &x {b: 1, b: 2}\n" + "".join(f"c{i}: *x\n" for i in range(5))
    assert len([i for i in _issues(many) if "given twice" in i[2]]) == 1


def test_alias_bombs_are_refused_before_they_expand() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    started = time.perf_counter()
    issues = _issues("\n".join(lines) + "\n")
    assert "values" in issues[0][2]
    assert time.perf_counter() - started < 30  # a runaway would take hours


def test_oversized_documents_and_too_many_members_are_refused() -> None:
    assert "longer than" in _issues("#" * (MAX_DOCUMENT_CHARS + 1))[0][2]
    data = _document()
    data["spec"]["members"] += [{"name": f"m-{i}"} for i in range(MAX_MEMBERS)]
    issues = _issues(yaml.safe_dump(data))
    assert issues[0][0] == "spec.members" and "at most" in issues[0][2]


def test_reference_checks_are_linear_and_report_the_exact_path() -> None:
    """10,000 distinct members plus one duplicate: one issue, at the duplicate."""
    data = _document()
    members = data["spec"]["members"]
    members += [{"name": f"m-{i}", "namespaces": [f"m-{i}"]} for i in range(10_000)]
    members.append({"name": "m-17"})
    issues = _issues(yaml.safe_dump(data))
    assert [(p, m) for p, _, m in issues] == [
        (f"spec.members[{len(members) - 1}].name", "duplicate member 'm-17'")
    ]


def test_many_bad_fields_are_listed_up_to_a_cap() -> None:
    data = _document()
    data["spec"]["members"] += [{"name": f"m-{i}", "weight": -1} for i in range(500)]
    issues = _issues(yaml.safe_dump(data))
    assert len(issues) == 101 and issues[-1][2] == "... and 400 more error(s)"


def test_a_version_beyond_what_the_audit_history_holds_names_the_field() -> None:
    # A 32-bit column in PostgreSQL: version 3,000,000,000 could not be recorded, and the
    # API failed to start without saying why.
    data: dict[str, Any] = yaml.safe_load(DEFAULT_POLICY.read_text())
    data["metadata"]["version"] = 3_000_000_000
    issues = _issues(yaml.safe_dump(data))
    assert [path for path, _, _ in issues] == ["metadata.version"], issues
    data["metadata"]["version"] = 2**31 - 1
    assert parse_policy(yaml.safe_dump(data)).version == 2**31 - 1


def test_fixed_shares_have_at_most_six_decimals_like_all_money() -> None:
    data: dict[str, Any] = yaml.safe_load(DEFAULT_POLICY.read_text())
    data["spec"]["billing"]["sharedFixedCosts"] = [
        {
            "name": "ops",
            "monthlyAmount": "10.00",
            "split": "fixed",
            "shares": {"uni-north": "0.3333335", "lab-bio": "0.6666665"},
        }
    ]
    issues = _issues(yaml.safe_dump(data))
    assert any("shares" in path and "6 decimal places" in message for path, _, message in issues)
