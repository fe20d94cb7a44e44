"""`fairpool shares` and `fairpool explain` against a real server on loopback: what they
print and their exit codes agree with the API's answer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result

from scheduler.cli.main import cli
from tests.unit.test_api_support import MEMBER_A, TOKENS, Running, running_server

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
