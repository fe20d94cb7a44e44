"""Every shipped policy and inventory must load; bad documents name field and line."""

from pathlib import Path

import pytest
from click.testing import CliRunner

import policies.model as policy_model
from policies import PolicyError, load_policy
from policies.inventory import parse_inventory
from policies.loader import parse_policy
from reports.costmodel.frames import UNATTRIBUTED
from scheduler.cli.main import cli

EXAMPLES = sorted(Path("policies/examples").glob("*.yaml"))


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_policy_is_valid(path: Path) -> None:
    policy = load_policy(path)
    assert policy.members
    result = CliRunner().invoke(cli, ["policy", "validate", str(path)])
    assert result.exit_code == 0, result.output


MINIMAL = """\
apiVersion: fairpool.io/v1
kind: Policy
spec:
  gpuModels:
    - name: H100
      hourlyCost: "2.00"
  members:
    - name: a
"""


def issues_of(text: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text)
    return [(i.path, i.line, i.message) for i in info.value.issues]


def test_names_given_twice_are_reported_with_the_field_errors() -> None:
    """In one pass: a user fixing the field error would otherwise meet the duplicates
    only on the next run."""
    text = MINIMAL.replace(
        "    - name: a\n",
        "    - name: a\n      namespaces: [lab]\n      weight: -1\n"
        "    - name: a\n    - name: b\n      namespaces: [lab]\n",
    ).replace(
        '      hourlyCost: "2.00"\n',
        '      hourlyCost: "2.00"\n    - name: H100\n      hourlyCost: x\n',
    )
    found = issues_of(text)
    paths = [path for path, _, _ in found]
    assert "spec.members[0].weight" in paths and "spec.gpuModels[1].hourlyCost" in paths
    assert ("spec.gpuModels[1].name", 7, "duplicate GPU model 'H100'") in found
    assert ("spec.members[1].name", 13, "duplicate member 'a'") in found
    assert (
        "spec.members[2].namespaces[0]",
        15,
        "namespace 'lab' is already claimed by member 'a'",
    ) in found


@pytest.mark.parametrize("name", ["unattributed", "pool"])
def test_a_member_cannot_have_a_name_the_report_uses(name: str) -> None:
    # A member named unattributed was billed every unclaimed namespace's usage; one named
    # pool had a summary row like the pool's totals.
    text = MINIMAL.replace("    - name: a\n", f"    - name: a\n    - name: {name}\n")
    [(path, line, message)] = issues_of(text)
    assert (path, line) == ("spec.members[1].name", 9)
    assert message.startswith(f"member name {name!r} is reserved: the cost report")
    # The report's own name for unclaimed usage is one of them.
    assert UNATTRIBUTED in policy_model.RESERVED_MEMBER_NAMES


def test_a_document_of_the_wrong_shape_reports_its_field_errors_only() -> None:
    """Names are looked for only where they can be: no error of its own."""
    for spec in ("spec: 3\n", "spec:\n  members: 3\n  gpuModels: [3, {name: 4}]\n"):
        found = issues_of("apiVersion: fairpool.io/v1\nkind: Policy\n" + spec)
        assert found and not any("duplicate" in message for _, _, message in found)


def test_minimal_policy_takes_defaults() -> None:
    policy = parse_policy(MINIMAL)
    assert policy.member("a").weight == 1.0
    assert policy.sharing.borrowing is True
    assert policy.billing.time_zone == "UTC"
    assert str(policy.gpu_model("H100").hourly_cost) == "2.00"


@pytest.mark.parametrize(
    ("change", "path", "line", "words"),
    [
        (("kind: Policy", "kind: Polcy"), "kind", 2, "Policy"),
        (('hourlyCost: "2.00"', 'hourlyCost: "-1"'), "spec.gpuModels[0].hourlyCost", 6, ""),
        # Decimal reads these as 24 and 2.00: a price is never guessed.
        (('hourlyCost: "2.00"', 'hourlyCost: "2_4"'), "spec.gpuModels[0].hourlyCost", 6, "'2_4'"),
        (
            ('hourlyCost: "2.00"', 'hourlyCost: "\uff12.00"'),
            "spec.gpuModels[0].hourlyCost",
            6,
            "ASCII digits",
        ),
        (
            ('hourlyCost: "2.00"', 'hourlyCost: "2.00"\n      vendor: x'),
            "spec.gpuModels[0].vendor",
            7,
            "unknown field",
        ),
        (
            ("    - name: a", "    - name: a\n      purchased: {B200: 2}"),
            "spec.members[0].purchased.B200",
            9,
            "B200",
        ),
        (("    - name: a", "    - name: a\n    - name: a"), "spec.members[1].name", 9, "duplicate"),
        (
            ("    - name: a", "    - name: a\n  billing:\n    timeZone: Mars/Olympus"),
            "spec.billing.timeZone",
            10,
            "Mars/Olympus",
        ),
        (
            ("    - name: a", "    - name: a\n  sharing:\n    borrowing: maybe"),
            "spec.sharing.borrowing",
            10,
            "",
        ),
        (("    - name: a", "    - name: Bad_Name"), "spec.members[0].name", 8, "pattern"),
        # float and int read these as 10, 16, 3, 600 and 2: a quoted number is never guessed.
        (
            ("    - name: a", '    - name: a\n      weight: "1_0"'),
            "spec.members[0].weight",
            9,
            "'1_0'",
        ),
        (
            ("    - name: a", '    - name: a\n      maxGpus: "1_6"'),
            "spec.members[0].maxGpus",
            9,
            "ASCII digits",
        ),
        (
            ("    - name: a", '    - name: a\n      purchased: {H100: "\u0663"}'),
            "spec.members[0].purchased.H100",
            9,
            "ASCII digits",
        ),
        (
            ("    - name: a", "    - name: a\n  sharing:\n    minRuntimeSeconds: '6_00'"),
            "spec.sharing.minRuntimeSeconds",
            10,
            "'6_00'",
        ),
        (
            ("    - name: a", "    - name: a\n  sharing:\n    usageHalfLifeHours: '\uff12'"),
            "spec.sharing.usageHalfLifeHours",
            10,
            "ASCII digits",
        ),
    ],
)
def test_bad_policy_names_path_and_line(
    change: tuple[str, str], path: str, line: int, words: str
) -> None:
    found = issues_of(MINIMAL.replace(*change))
    assert any(p == path and ln == line and words in msg for p, ln, msg in found), found


def test_fixed_split_shares_must_sum_to_one() -> None:
    text = MINIMAL + (
        "  billing:\n    sharedFixedCosts:\n      - name: rack\n        monthlyAmount: '10'\n"
        "        split: fixed\n        shares: {a: '0.4'}\n"
    )
    found = issues_of(text)
    assert any("sum to 1" in msg for _, _, msg in found), found


def test_money_in_any_decimal_notation_of_ascii_digits_is_read() -> None:
    for text, value in (("2.40", "2.40"), (" 2.40 ", "2.40"), ("1E+2", "1E+2"), (".5", "0.5")):
        policy = parse_policy(MINIMAL.replace('"2.00"', repr(text)))
        assert str(policy.gpu_model("H100").hourly_cost) == value
    text = MINIMAL + (
        "  billing:\n    sharedFixedCosts:\n      - name: rack\n        monthlyAmount: '1_0'\n"
        "        split: fixed\n        shares: {a: '\u0661'}\n"
    )
    found = issues_of(text)
    paths = {p for p, _, _ in found}
    assert "spec.billing.sharedFixedCosts[0].monthlyAmount" in paths, found
    assert "spec.billing.sharedFixedCosts[0].shares.a" in paths, found


def test_quoted_numbers_in_ascii_digits_are_read() -> None:
    text = MINIMAL.replace(
        "    - name: a",
        "    - name: a\n      weight: '1.5'\n      maxGpus: ' 16 '\n"
        "  sharing:\n    minRuntimeSeconds: '600'\n    usageHalfLifeHours: '2.5e1'",
    )
    policy = parse_policy(text)
    assert policy.member("a").weight == 1.5
    assert policy.member("a").max_gpus == 16
    assert policy.sharing.min_runtime_seconds == 600
    assert policy.sharing.usage_half_life_hours == 25.0


def test_not_yaml_names_line() -> None:
    found = issues_of("apiVersion: fairpool.io/v1\nkind: [Policy\n")
    assert found[0][1] is not None


def test_validate_cli_exits_2_on_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL.replace("name: a", "name: a\n      weight: 0"))
    result = CliRunner().invoke(cli, ["policy", "validate", str(bad)])
    assert result.exit_code == 2
    missing = CliRunner().invoke(cli, ["policy", "validate", str(tmp_path / "none.yaml")])
    assert missing.exit_code == 2


INVENTORY = """\
apiVersion: fairpool.io/v1
kind: ClusterInventory
spec:
  nodeGroups:
    - name: g1
      owner: a
      count: 2
      gpusPerNode: 8
      gpuModel: H100
"""


def test_inventory_defaults_and_errors() -> None:
    inventory = parse_inventory(INVENTORY)
    assert inventory.total_gpus() == 16
    assert inventory.node_groups[0].node_names() == ["g1-0", "g1-1"]
    with pytest.raises(PolicyError) as info:
        parse_inventory(INVENTORY.replace("count: 2", "count: 0"))
    assert info.value.issues[0].path == "spec.nodeGroups[0].count"
    assert info.value.issues[0].line == 7
    with pytest.raises(PolicyError) as info:
        parse_inventory(INVENTORY.replace("count: 2", "count: '1_0'"))
    assert info.value.issues[0].path == "spec.nodeGroups[0].count"
    assert "'1_0'" in info.value.issues[0].message
    # A group named twice is reported with the field errors, in one pass.
    twice = INVENTORY.replace("count: 2", "count: 0") + INVENTORY.split("nodeGroups:\n")[1]
    with pytest.raises(PolicyError) as info:
        parse_inventory(twice)
    found = [(i.path, i.message) for i in info.value.issues]
    assert found[0][0] == "spec.nodeGroups[0].count"
    assert ("spec.nodeGroups[1].name", "duplicate node group 'g1'") in found


@pytest.mark.parametrize(
    ("written", "read"),
    [("2:30", "150"), ("010", "8"), ("0x10", "16"), ("1_0", "10"), ("0b11", "3"), ("1:0", "60")],
)
def test_a_number_yaml_reads_in_another_base_is_refused(written: str, read: str) -> None:
    """YAML 1.1 reads these plain numbers in base 60, 8, 16 or 2, or drops the
    underscore: `hourlyCost: 2:30` billed 150 an hour, `maxGpus: 010` allowed 8."""
    text = MINIMAL.replace('hourlyCost: "2.00"', f"hourlyCost: {written}")
    ((path, line, message),) = issues_of(text)
    assert (path, line) == ("spec.gpuModels[0].hourlyCost", 6)
    assert message.startswith(f"{written!r} is read by YAML as {read}")


@pytest.mark.parametrize("value", ["true", "false", "yes", "on"])
def test_true_or_false_is_not_a_number(value: str) -> None:
    """Read as 1 or 0: `maxReclaimsPerJob: false`, meant as "no limit", became 0."""
    text = MINIMAL + f"  sharing:\n    maxReclaimsPerJob: {value}\n"
    ((path, line, message),) = issues_of(text)
    assert (path, line) == ("spec.sharing.maxReclaimsPerJob", 10)
    assert message == "expected a number such as '30', not true/false"


def test_a_key_yaml_does_not_read_as_text_is_refused_at_its_line() -> None:
    text = MINIMAL + "  ~: 1\n  yes: 2\n"
    found = issues_of(text)
    assert sorted(found) == [
        ("spec", 9, "key '~' is not text (YAML reads it as null): quote it"),
        ("spec", 10, "key 'yes' is not text (YAML reads it as bool): quote it"),
    ]


def test_the_documents_own_problems_are_reported_with_the_field_errors() -> None:
    """A key given twice, a key that is no text and a number YAML reads in another base
    were reported alone: the field errors (here a weight of 0, an unknown idleCost)
    came only once they were fixed, though policy.md says every error comes at once."""
    text = MINIMAL.replace("    - name: a\n", "    - name: a\n      weight: 0\n") + (
        "  sharing:\n    maxReclaimsPerJob: 010\n    yes: 1\n"
        "  billing:\n    idleCost: nobody\n    idleCost: owner2\n"
    )
    assert issues_of(text) == [
        (
            "spec.sharing.maxReclaimsPerJob",
            11,
            "'010' is read by YAML as 8: write the number in decimal digits (or quote it, as text)",
        ),
        ("spec.sharing", 12, "key 'yes' is not text (YAML reads it as bool): quote it"),
        ("spec.billing.idleCost", 15, "key 'idleCost' given twice (first on line 14)"),
        ("spec.members[0].weight", 9, "Input should be greater than 0"),
    ]


def test_two_shared_fixed_costs_of_one_name_are_refused() -> None:
    """Billing keys costs by name: the second replaced the first in the members' shares
    while the pool cost counted both, and every report failed its own balance check."""
    costs = (
        "  billing:\n    sharedFixedCosts:\n"
        '      - {name: ops, monthlyAmount: "100.00"}\n'
        '      - {name: ops, monthlyAmount: "300.00"}\n'
    )
    assert issues_of(MINIMAL + costs) == [
        ("spec.billing.sharedFixedCosts[1].name", 12, "duplicate shared fixed cost 'ops'")
    ]


@pytest.mark.parametrize("zone", ["localtime", "posixrules", "right/UTC", "Factory"])
def test_a_time_zone_is_an_iana_name(zone: str) -> None:
    """Host files the zone reader also opens: `localtime` follows the machine's clock
    setting, the others exist on some hosts only."""
    ((path, _, message),) = issues_of(MINIMAL + f"  billing:\n    timeZone: {zone}\n")
    assert path == "spec.billing.timeZone" and f"unknown time zone {zone!r}" in message


@pytest.mark.parametrize("where", ["metadata", "cost"])
def test_a_name_with_a_control_character_is_refused(where: str) -> None:
    """Printed on invoices and logs and sent to the API: a newline split a report's line,
    and PostgreSQL stores no NUL."""
    if where == "metadata":
        text = MINIMAL.replace("kind: Policy\n", 'kind: Policy\nmetadata: {name: "a\\nb"}\n')
        path = "metadata.name"
    else:
        text = MINIMAL + (
            '  billing:\n    sharedFixedCosts:\n      - {name: "ops\\u0000", monthlyAmount: "1"}\n'
        )
        path = "spec.billing.sharedFixedCosts[0].name"
    ((found, _, message),) = issues_of(text)
    assert found == path and "a control character" in message
