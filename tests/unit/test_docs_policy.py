"""docs/policy.md documents every field of the policy and inventory models.

Each pydantic model reached from `Policy` and `ClusterInventory` has a section whose
heading ends with `(ClassName)`; its table must have a row for every field, by the field's
YAML name (its alias). Adding a field without documenting it fails here."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from policies.inventory import ClusterInventory
from policies.model import Policy

POLICY_DOC = Path(__file__).resolve().parents[2] / "docs" / "policy.md"
ROOTS: tuple[type[BaseModel], ...] = (Policy, ClusterInventory)
HEADING = re.compile(r"^(#+) .*\((\w+)\)\s*$")


def _models_in(annotation: object) -> Iterator[type[BaseModel]]:
    """Pydantic models named by a field's type, through list/dict/Optional/Annotated."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    origin = typing.get_origin(annotation)
    if origin is None and not isinstance(annotation, types.UnionType):
        return
    for argument in typing.get_args(annotation):
        yield from _models_in(argument)


def reachable_models(roots: tuple[type[BaseModel], ...] = ROOTS) -> list[type[BaseModel]]:
    """Every model reachable from the roots, each once, in discovery order."""
    found: list[type[BaseModel]] = []
    todo = list(roots)
    while todo:
        model = todo.pop(0)
        if model in found:
            continue
        found.append(model)
        for info in model.model_fields.values():
            todo.extend(_models_in(info.annotation))
    return found


def yaml_names(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def sections(text: str) -> dict[str, str]:
    """`(ClassName)` heading -> the text up to the next heading of the same or higher level."""
    lines = text.splitlines()
    out: dict[str, str] = {}
    for i, line in enumerate(lines):
        match = HEADING.match(line)
        if match is None:
            continue
        level = len(match.group(1))
        body: list[str] = []
        for following in lines[i + 1 :]:
            if following.startswith("#") and len(following) - len(following.lstrip("#")) <= level:
                break
            body.append(following)
        out[match.group(2)] = "\n".join(body)
    return out


def documented_fields(section: str) -> set[str]:
    """Field names in the first column of the section's table rows."""
    names: set[str] = set()
    for line in section.splitlines():
        match = re.match(r"^\|\s*`([^`]+)`\s*\|", line)
        if match:
            names.add(match.group(1))
    return names


def test_the_walk_reaches_nested_models_and_aliases() -> None:
    names = {m.__name__ for m in reachable_models()}
    assert {"Member", "SharedFixedCost", "NodeGroup", "TaintSpec"} <= names
    from policies.inventory import NodeGroup
    from policies.model import Member

    assert "memoryGiB" in yaml_names(NodeGroup)
    assert "lendingLimit" in yaml_names(Member)


def test_a_missing_field_is_detected() -> None:
    from policies.model import Member

    doc = sections(POLICY_DOC.read_text(encoding="utf-8"))
    shortened = "\n".join(
        line for line in doc["Member"].splitlines() if not line.startswith("| `maxGpus`")
    )
    assert "maxGpus" in set(yaml_names(Member)) - documented_fields(shortened)


@pytest.mark.parametrize("model", reachable_models(), ids=lambda m: m.__name__)
def test_every_field_is_documented(model: type[BaseModel]) -> None:
    doc = sections(POLICY_DOC.read_text(encoding="utf-8"))
    assert model.__name__ in doc, f"docs/policy.md has no section headed '... ({model.__name__})'"
    missing = set(yaml_names(model)) - documented_fields(doc[model.__name__])
    assert not missing, f"docs/policy.md, section {model.__name__}: no row for {sorted(missing)}"
