"""Loading a policy from YAML text or a file."""

from __future__ import annotations

from pathlib import Path

from policies.model import Policy
from policies.yamldoc import load_document, validate_document

DEFAULT_POLICY = Path(__file__).parent / "defaults" / "policy.yaml"


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    return validate_document(Policy, text, source)


def load_policy(path: str | Path | None = None) -> Policy:
    """The policy in `path`, or the built-in demo policy when `path` is None."""
    return load_document(Policy, path if path is not None else DEFAULT_POLICY)


def policy_source_text(path: str | Path | None = None) -> str:
    """The text `load_policy(path)` reads, to keep beside what was computed with it."""
    return Path(path if path is not None else DEFAULT_POLICY).read_text(encoding="utf-8")
