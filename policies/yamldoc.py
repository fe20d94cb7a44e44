"""YAML documents that remember where every value stands, so errors can name the line.

A document is parsed once (libyaml builds the node tree; the values are constructed from
that same tree) and bounded before anything walks it: its size, its nesting depth, its
number of values (aliases counted at every use) and the digits of its integers. So a
hostile document costs time in proportion to its size and ends in a PolicyError naming
the line, never in a crash or a runaway."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from policies.errors import FieldIssue, PolicyError

M = TypeVar("M", bound=BaseModel)

MAX_DOCUMENT_CHARS = 2 << 20
"""Characters in one policy or inventory document (2 MiB of ASCII)."""
MAX_DEPTH = 32
"""Nesting of mappings and sequences; a policy needs 6."""
MAX_VALUES = 1_000_000
"""Values (scalars, mappings, sequences) in one document, aliases counted at every use,
so an alias bomb is refused before it is expanded."""
MAX_NUMBER_CHARS = 40
"""Characters of one integer or float: every number the models accept fits in far
fewer, and converting a huge integer costs time quadratic in its digits."""
MAX_ISSUES = 100
"""Issues listed in one PolicyError; a document with more is broken enough."""

_Loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NUMBER_TAGS = frozenset({"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"})
_SCALAR_TAGS_TO_CHECK = _NUMBER_TAGS | {"tag:yaml.org,2002:timestamp"}
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _bound_tree(
    root: yaml.Node, loader: Any, source: str, strict: bool = False
) -> list[FieldIssue]:
    """Refuse a node tree too deep, too big, or with a number that is too long or that
    cannot be constructed (a date before year 1), naming the line. Iterative, so depth
    cannot exhaust the stack; aliases are walked at every use so they are counted.

    Returned, not raised: the problems of a document that can still be read, so that
    its fields are checked too and every error is said at once: a key given twice, and
    with `strict` (documents validated against a model, whose keys are field names and
    whose numbers are decimal) a key that is not a string, and a number YAML 1.1 reads
    in another base."""
    issues: list[FieldIssue] = []
    readable: list[FieldIssue] = []
    stack: list[tuple[yaml.Node, tuple[str | int, ...]]] = [(root, ())]
    seen = 0
    keys_checked: set[int] = set()
    while stack and len(issues) + len(readable) < MAX_ISSUES:
        node, path = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            message = f"more than {MAX_VALUES:,} values (aliases count at each use)"
            issues.append(FieldIssue(format_path(path), message, _line(node)))
            break
        if isinstance(node, yaml.ScalarNode):
            if node.tag in _SCALAR_TAGS_TO_CHECK:
                problem = _scalar_problem(node, loader)
                if problem:
                    issues.append(FieldIssue(format_path(path), problem, _line(node)))
                elif strict and (problem := _not_decimal(node, loader)):
                    readable.append(FieldIssue(format_path(path), problem, _line(node)))
            continue
        if len(path) >= MAX_DEPTH:
            message = f"nested deeper than {MAX_DEPTH} levels"
            issues.append(FieldIssue(format_path(path), message, _line(node)))
            break
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, (*path, i)) for i, child in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            if id(node) not in keys_checked:  # an alias walks the same mapping again
                keys_checked.add(id(node))
                readable.extend(_duplicate_keys(node, path))
                if strict:
                    readable.extend(_keys_not_text(node, path))
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else "<key>"
                stack.append((key, (*path, name)))
                stack.append((value, (*path, name)))
    if issues:
        raise PolicyError(source, _by_line([*issues, *readable]))
    return _by_line(readable)


def _by_line(issues: list[FieldIssue]) -> list[FieldIssue]:
    # The walk pops its stack, so it finds the last lines first.
    return sorted(issues, key=lambda issue: issue.line or 0)


def _duplicate_keys(node: yaml.MappingNode, path: tuple[str | int, ...]) -> list[FieldIssue]:
    """A key given twice in one mapping. YAML keeps the last silently, so the first
    (often a whole block: a second `members:`, a member's `weight` written twice) would
    vanish without a word; Kubernetes refuses such manifests too."""
    first: dict[tuple[str, str], yaml.Node] = {}
    found: list[FieldIssue] = []
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
            continue
        earlier = first.setdefault((key.tag, key.value), key)
        if earlier is not key:
            message = f"key {key.value!r} given twice (first on line {_line(earlier)})"
            found.append(FieldIssue(format_path((*path, key.value)), message, _line(key)))
    return found


_DECIMAL_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")
_DECIMAL_FLOAT = re.compile(
    r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)"
)
_STRING_TAG = "tag:yaml.org,2002:str"


def _not_decimal(node: yaml.ScalarNode, loader: Any) -> str | None:
    """A number YAML 1.1 reads in another base or form: `010` is 8, `0x10` 16, `1_0` 10,
    `2:30` 150 (base 60), so a price or a limit would silently differ from the text."""
    if node.tag == "tag:yaml.org,2002:timestamp":
        return None
    pattern = _DECIMAL_INT if node.tag == "tag:yaml.org,2002:int" else _DECIMAL_FLOAT
    if pattern.fullmatch(node.value):
        return None
    read = loader.construct_object(node)
    return (
        f"{node.value!r} is read by YAML as {read!r}: write the number in decimal digits "
        "(or quote it, as text)"
    )


def _keys_not_text(node: yaml.MappingNode, path: tuple[str | int, ...]) -> list[FieldIssue]:
    """Keys that YAML reads as something other than text (`~`, `yes`, `1`, a date): a
    model's keys are field and member names, and such a key was reported on the wrong
    line, with no field name, and two of them (`yes` and `true`) as no duplicate."""
    return [
        FieldIssue(
            format_path(path),
            f"key {key.value!r} is not text (YAML reads it as "
            f"{key.tag.rsplit(':', 1)[-1]}): quote it",
            _line(key),
        )
        for key, _ in node.value
        if isinstance(key, yaml.ScalarNode) and key.tag not in (_STRING_TAG, _MERGE_TAG)
    ]


def _scalar_problem(node: yaml.ScalarNode, loader: Any) -> str | None:
    if node.tag in _NUMBER_TAGS and len(node.value) > MAX_NUMBER_CHARS:
        return f"number with more than {MAX_NUMBER_CHARS} characters"
    try:
        loader.construct_object(node)
    except (ValueError, OverflowError, yaml.YAMLError) as exc:
        return f"cannot read {node.value[:40]!r}: {exc}"
    return None


def _error_line(error: yaml.YAMLError, text: str) -> int | None:
    """The line a YAML error points at: its mark, or for a character the reader refused
    (a control character), the line of that character's position."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    if mark is not None:
        return int(mark.line) + 1
    position = getattr(error, "position", None)
    if isinstance(position, int):
        return text.count("\n", 0, position) + 1
    return None


def parse_yaml(text: str, source: str, strict: bool = False) -> tuple[Any, yaml.Node | None]:
    """The plain data and the node tree (for line numbers) of one YAML document
    (`strict`: see `_bound_tree`)."""
    data, node, readable = _parse_yaml(text, source, strict)
    if readable:
        raise PolicyError(source, readable)
    return data, node


def _parse_yaml(
    text: str, source: str, strict: bool
) -> tuple[Any, yaml.Node | None, list[FieldIssue]]:
    """`parse_yaml`, and the problems of a document it could read (`_bound_tree`)."""
    if len(text) > MAX_DOCUMENT_CHARS:
        raise PolicyError(
            source,
            [FieldIssue("", f"document longer than {MAX_DOCUMENT_CHARS:,} characters", None)],
        )
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None, []
        readable = _bound_tree(node, loader, source, strict)
        data = loader.construct_document(node)
    except PolicyError:
        raise
    except yaml.YAMLError as exc:
        raise PolicyError(
            source, [FieldIssue("", f"not valid YAML: {exc}", _error_line(exc, text))]
        ) from exc
    except (ValueError, OverflowError, RecursionError) as exc:
        raise PolicyError(source, [FieldIssue("", f"cannot read the document: {exc}")]) from exc
    finally:
        loader.dispose()
    return data, node, readable


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
    data, node, readable = _parse_yaml(text, source, strict=True)
    if not isinstance(data, dict):
        raise PolicyError(
            source, [*readable, FieldIssue("", "expected a mapping at the top level", 1)]
        )
    # A field error that a problem of the document explains (on its line, of its key,
    # or under a key that is no text, which only such a problem names) would say it
    # twice, or on the line of a key given twice that YAML dropped.
    said_at = {issue.line for issue in readable}
    said_of = {issue.path for issue in readable}
    try:
        document = model.model_validate(data)
    except ValidationError as exc:
        issues = list(readable)
        for err in exc.errors():
            no_text = err["type"] == "invalid_key" or any(
                p is None or isinstance(p, bool) for p in err["loc"]
            )
            if readable and no_text:
                continue
            # pydantic appends the failing union member or validator name to loc; keep
            # only the parts that exist in the document.
            loc = [p for p in err["loc"] if isinstance(p, int | str)]
            message = err["msg"]
            if err["type"] == "extra_forbidden":
                message = "unknown field"
            elif err["type"] == "missing":
                message = "required field is missing"
            issue = FieldIssue(format_path(loc), message, line_of(node, loc))
            if issue.path not in said_of and (issue.line is None or issue.line not in said_at):
                issues.append(issue)
        # Names given twice are found in the document as written, so they are reported
        # with the field errors rather than only once those are fixed.
        names = getattr(model, "name_issues_of", None)
        if names is not None:
            issues.extend(
                FieldIssue(format_path(loc), msg, line_of(node, loc)) for loc, msg in names(data)
            )
        raise PolicyError(source, _capped(issues)) from exc
    if readable:
        raise PolicyError(source, _capped(readable))
    checker = getattr(document, "reference_issues", None)
    if checker is not None:
        found = checker()
        if found:
            raise PolicyError(
                source,
                _capped(
                    [FieldIssue(format_path(loc), msg, line_of(node, loc)) for loc, msg in found]
                ),
            )
    return document


def _capped(issues: list[FieldIssue]) -> list[FieldIssue]:
    """The first MAX_ISSUES issues and, when there were more, one saying how many."""
    if len(issues) <= MAX_ISSUES:
        return issues
    more = len(issues) - MAX_ISSUES
    return [*issues[:MAX_ISSUES], FieldIssue("", f"... and {more:,} more error(s)")]


def read_document_text(path: str | Path) -> str:
    """A document file's text; an unreadable file, or one that is not UTF-8, is a
    PolicyError naming it."""
    file = Path(path)
    try:
        return file.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(str(file), [FieldIssue("", f"cannot read: {exc.strerror}")]) from exc
    except UnicodeDecodeError as exc:
        issue = FieldIssue("", f"not UTF-8 text (byte {exc.start}: {exc.reason})")
        raise PolicyError(str(file), [issue]) from exc


def document_lines(path: str | Path) -> Callable[[Sequence[str | int]], int | None]:
    """Where each field of a valid document file was written, for checks made after
    parsing it (against another document). A file that no longer reads gives no lines."""
    try:
        _, node = parse_yaml(read_document_text(path), str(path))
    except PolicyError:
        node = None
    return lambda loc: line_of(node, loc)


def load_document(model: type[M], path: str | Path) -> M:
    """`validate_document` on a file; an unreadable file is a PolicyError too."""
    return validate_document(model, read_document_text(path), str(path))
