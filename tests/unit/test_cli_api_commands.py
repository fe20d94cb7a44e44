"""`fairpool shares` and `fairpool explain` against a real server on loopback: what they
print and their exit codes agree with the API's answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from policies.loader import DEFAULT_POLICY
from proto.fairpool.v1 import policy_pb2, share_pb2
from scheduler.cli.main import cli
from tests.unit.test_api_support import (
    MEMBER_A,
    MEMBER_B,
    TOKENS,
    Running,
    metadata,
    running_server,
)

A100 = "NVIDIA-A100-SXM4-80GB"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with running_server(tmp_path_factory.mktemp("cli-api")) as running:
        yield running


def fairpool(api: Running, role: str, *args: str) -> Result:
    server = ["--server", f"127.0.0.1:{api.server.port}", "--token", TOKENS[role]]
    return CliRunner().invoke(cli, [*args, *server], env={"COLUMNS": "200"})


def test_shares_of_a_model_the_member_has_no_row_on_is_the_pool_not_an_error(
    api: Running,
) -> None:
    # uni-north contributes H100s only. The API answers OK (no rows, the A100 pool); the
    # CLI said "--gpu-model ...: no shares (not a member or GPU model of the policy?)"
    # and exited 2, for a model the policy prices and the cluster has.
    for role, args in (
        (f"member:{MEMBER_A}", ["shares", "--gpu-model", A100]),
        ("admin", ["shares", "--member", MEMBER_A, "--gpu-model", A100]),
    ):
        result = fairpool(api, role, *args)
        assert result.exit_code == 0, result.output
        said = " ".join(result.output.split())
        assert "no shares" in said and f"on {A100} in policy version" in said
        pool = result.output[result.output.index("pool") :]
        assert A100 in pool and "NVIDIA-H100" not in pool


def test_explain_with_a_name_and_member_is_refused_not_ignored(api: Running) -> None:
    # `explain NAME --member M` explained NAME whoever's job it was, --member unread.
    job = api.shares.ListPending(
        share_pb2.ListPendingRequest(limit=1), metadata=metadata("admin")
    ).jobs[0]
    other = next(m for m in (MEMBER_A, MEMBER_B) if m != job.member)
    alone = fairpool(api, "admin", "explain", job.job_id)
    assert alone.exit_code == 0 and f"of {job.member}," in alone.output, alone.output
    result = fairpool(api, "admin", "explain", job.job_id, "--member", other)
    assert result.exit_code == 2, result.output
    assert "--member: only with the queue (without NAME)" in result.output, result.output


def test_the_queue_with_a_namespace_is_refused_not_listed_whole(api: Running) -> None:
    # `explain -n NS` listed every namespace's pending jobs, -n unread.
    result = fairpool(api, "admin", "explain", "-n", MEMBER_B)
    assert result.exit_code == 2, result.output
    assert "--namespace: only with a NAME" in result.output, result.output


def test_a_queue_cut_by_limit_says_how_many_are_shown(api: Running) -> None:
    # The title said "pending: N job(s)" above fewer rows, as if they were the queue.
    total = api.shares.ListPending(share_pb2.ListPendingRequest(), metadata=metadata("admin")).total
    assert total > 2
    cut = fairpool(api, "admin", "explain", "--limit", "2")
    assert cut.exit_code == 0, cut.output
    assert f"pending: {total} job(s), the 2 oldest shown (--limit)" in cut.output
    whole = fairpool(api, "admin", "explain", "--limit", str(total))
    assert whole.output.splitlines()[0].rstrip() == f"pending: {total} job(s)"


def test_history_pages_with_before(tmp_path: Path) -> None:
    # `policy history` showed the newest --limit versions (at most 500) and had no way
    # to list older ones, nor said that there were any.
    with running_server(tmp_path) as api:
        data = yaml.safe_load(DEFAULT_POLICY.read_text())
        for weight in (2, 3, 4):
            data["spec"]["members"][0]["weight"] = weight
            api.policy.ApplyPolicy(
                policy_pb2.ApplyPolicyRequest(yaml=yaml.safe_dump(data)),
                metadata=metadata("admin"),
                timeout=30,
            )
        newest = fairpool(api, "admin", "policy", "history", "--limit", "2")
        assert newest.exit_code == 0, newest.output
        assert _versions(newest.output) == [4, 3]
        assert "older versions: --before 3" in newest.output
        older = fairpool(api, "admin", "policy", "history", "--limit", "2", "--before", "3")
        assert older.exit_code == 0, older.output
        assert _versions(older.output) == [2, 1]
        assert "older versions" not in older.output


def _versions(output: str) -> list[int]:
    rows = [line.split("│") for line in output.splitlines() if line.startswith("│")]
    return [int(cells[1]) for cells in rows]


def test_a_members_diff_compares_a_file_in_the_members_view(api: Running, tmp_path: Path) -> None:
    """The member's view of the current version leaves the other members out: a file
    beside it showed all of them as added, and a change to another member's entry too."""
    member = f"member:{MEMBER_A}"
    same = fairpool(api, member, "policy", "diff", str(DEFAULT_POLICY))
    assert same.exit_code == 0, same.output
    assert f"in {MEMBER_A}'s view" in same.output
    assert "no change" in same.output and MEMBER_B not in same.output, same.output
    data = yaml.safe_load(DEFAULT_POLICY.read_text())
    for entry in data["spec"]["members"]:
        entry["weight"] = 5 if entry["name"] == MEMBER_A else 7
    draft = tmp_path / "draft.yaml"
    draft.write_text(yaml.safe_dump(data, sort_keys=False))
    mine = fairpool(api, member, "policy", "diff", str(draft))
    assert mine.exit_code == 0, mine.output
    changed = [line for line in mine.output.splitlines() if line.startswith(("+ ", "- "))]
    assert changed == ["-    weight: 1.0", "+    weight: 5.0"], mine.output
    whole = fairpool(api, "admin", "policy", "diff", str(draft))
    assert whole.exit_code == 0 and "+    weight: 7.0" in whole.output, whole.output
    assert "view" not in whole.output
