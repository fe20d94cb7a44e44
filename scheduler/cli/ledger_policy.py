"""Which policy `fairpool meter` and `fairpool report` run under: `--policy`, else the
newest version in the ledger's policy history; never the built-in demo consortium."""

from __future__ import annotations

from pathlib import Path

from policies.errors import InputError
from policies.loader import load_policy
from policies.model import Policy
from reports.ledger.database import check_url, masked


def ledger_exists(ledger_url: str) -> bool:
    """False for a SQLite ledger whose file is not there yet (opening it would create it)."""
    # Checked as every command that opens the ledger checks it (SQLAlchemy's parser
    # alone let a port that is not a number through as a traceback).
    url = check_url(ledger_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return True
    return Path(str(url.database)).exists()


def choose_policy(policy_file: Path | None, ledger_url: str) -> tuple[Policy, str]:
    """The policy and one line saying where it came from."""
    if policy_file is not None:
        policy = load_policy(policy_file)
        return policy, f"policy: {policy_file} (version {policy.version})"
    if ledger_exists(ledger_url):
        from reports.costmodel.policy_history import PolicyHistory
        from reports.ledger import Ledger

        with Ledger(ledger_url) as ledger:
            history = PolicyHistory.from_records(ledger.policy_records())
        if history is not None:
            policy = history.latest
            return policy, (
                f"policy: version {policy.version} from the ledger's policy history "
                "(no --policy given)"
            )
    raise InputError(
        "--policy: required (the policy file of the consortium); the ledger "
        f"{masked(ledger_url)} has no policy history to take it from"
    )
