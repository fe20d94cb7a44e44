"""Loading a policy from YAML text or a file."""

from __future__ import annotations

from pathlib import Path

from policies.model import Policy
from policies.yamldoc import load_document, read_document_text, validate_document

DEFAULT_POLICY = Path(__file__).parent / "defaults" / "policy.yaml"


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    return validate_document(Policy, text, source)


def load_policy(path: str | Path | None = None) -> Policy:
    """The policy in `path`, or the built-in demo policy when `path` is None."""
    return load_document(Policy, path if path is not None else DEFAULT_POLICY)


def load_policy_source(path: str | Path | None = None) -> tuple[Policy, str]:
    """`load_policy(path)` and the text it was read from, to keep beside what was
    computed with it: read once, so the copy is the policy that was used even when the
    file changes meanwhile."""
    file = path if path is not None else DEFAULT_POLICY
    text = read_document_text(file)
    return validate_document(Policy, text, str(file)), text
