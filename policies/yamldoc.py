"""YAML documents that remember where every value stands, so errors can name the line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from policies.errors import FieldIssue, PolicyError

M = TypeVar("M", bound=BaseModel)


def parse_yaml(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    """The plain data and the node tree (for line numbers) of one YAML document."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise PolicyError(source, [FieldIssue("", f"not valid YAML: {exc}", line)]) from exc
    return data, node


def line_of(node: yaml.Node | None, path: Sequence[str | int]) -> int | None:
    """The 1-based line of the deepest node reachable along `path`."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in path:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == part:
                    child = value
                    line = key.start_mark.line + 1
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            return line
        node = child
    return line


def format_path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validate_document(model: type[M], text: str, source: str) -> M:
    """Parse YAML text into `model`, or raise PolicyError naming every bad field and line."""
    data, node = parse_yaml(text, source)
    if not isinstance(data, dict):
        raise PolicyError(source, [FieldIssue("", "expected a mapping at the top level", 1)])
    try:
        document = model.model_validate(data)
    except ValidationError as exc:
        issues = []
        for err in exc.errors():
            # pydantic appends the failing union member or validator name to loc; keep
            # only the parts that exist in the document.
            loc = [p for p in err["loc"] if isinstance(p, int | str)]
            message = err["msg"]
            if err["type"] == "extra_forbidden":
                message = "unknown field"
            elif err["type"] == "missing":
                message = "required field is missing"
            issues.append(FieldIssue(format_path(loc), message, line_of(node, loc)))
        raise PolicyError(source, issues) from exc
    checker = getattr(document, "reference_issues", None)
    if checker is not None:
        found = checker()
        if found:
            raise PolicyError(
                source,
                [FieldIssue(format_path(loc), msg, line_of(node, loc)) for loc, msg in found],
            )
    return document


def load_document(model: type[M], path: str | Path) -> M:
    """`validate_document` on a file; an unreadable file is a PolicyError too."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(str(file), [FieldIssue("", f"cannot read: {exc.strerror}")]) from exc
    return validate_document(model, text, str(file))
