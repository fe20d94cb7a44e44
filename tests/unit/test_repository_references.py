"""No tracked file may point to a document outside the repository or to an issue number:
a reader of the repository cannot follow either. Docs pages named as `docs/<page>.md`
must exist."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
THIS = Path(__file__).resolve().relative_to(ROOT).as_posix()

# Built from pieces so that the patterns do not match this file's own source.
OUTSIDE_DOCUMENT = re.compile(r"\b" + "DESIGN" + r"\.md\b", re.IGNORECASE)
ISSUE_NUMBER = re.compile(r"\b" + "issues?" + r"\s*(?:#|no\.?\s*|number\s*)?\d+", re.IGNORECASE)
DOCS_PAGE = re.compile(r"(?<![\w/.-])docs/([\w-]+\.md)\b")


def tracked_text_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    return [name for name in out.decode().split("\0") if name]


def read_text(name: str) -> str | None:
    """The file's text, or None for a binary file (or one gone from the work tree)."""
    try:
        data = (ROOT / name).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def bad_references(name: str, text: str) -> list[str]:
    """`path:line: what` for every reference a reader of the repository cannot follow."""
    problems = []
    for number, line in enumerate(text.splitlines(), start=1):
        for pattern, what in (
            (OUTSIDE_DOCUMENT, "document outside the repository"),
            (ISSUE_NUMBER, "issue number"),
        ):
            for match in pattern.finditer(line):
                problems.append(f"{name}:{number}: {what}: {match.group(0)!r}")
        for match in DOCS_PAGE.finditer(line):
            if not (ROOT / "docs" / match.group(1)).is_file():
                problems.append(f"{name}:{number}: no such page: docs/{match.group(1)}")
    return problems


def repository_problems() -> list[str]:
    problems = []
    for name in tracked_text_files():
        if name == THIS:
            continue
        text = read_text(name)
        if text is not None:
            problems.extend(bad_references(name, text))
    return problems


def test_no_tracked_file_refers_outside_the_repository_or_to_issues() -> None:
    problems = repository_problems()
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize(
    "line",
    [
        "see " + "DESIGN" + ".md for the rules",
        "the metrics of " + "design" + '.md ("Metrics")',
        "Targets (" + "issue" + " 5): the report in under 30 s",
        "fixed in " + "issue" + " #12",
        "see docs/" + "no-such-page" + ".md",
    ],
)
def test_a_planted_reference_is_found(line: str) -> None:
    assert len(bad_references("planted.py", f"x = 1\n{line}\n")) == 1


def test_ordinary_words_are_not_references() -> None:
    text = "an issue with 2 GPUs is not a number: 'issues' here, docs/glossary.md exists\n"
    assert bad_references("fine.md", text) == []
