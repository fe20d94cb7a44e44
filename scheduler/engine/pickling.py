"""Engine records that cross a process boundary (a standalone replay's snapshot in a worker
process, the decisions and shares the API front answers from) are pickled through their
constructors. Compiled (see `make engine`), a frozen dataclass keeps no `__setstate__`, and
pickle's default rebuild assigns to its fields, which a frozen class refuses; and a
dataclass with its own `__init__` (`init=False`, see `decisions.MemberShare`) is rebuilt
through that `__init__`, which wants its fields."""

from __future__ import annotations

import copyreg
import dataclasses
from collections.abc import Iterable
from types import ModuleType
from typing import Any


def _by_constructor(record: Any) -> tuple[type, tuple[Any, ...]]:
    return type(record), tuple(getattr(record, f.name) for f in dataclasses.fields(record))


def register_by_constructor(modules: Iterable[ModuleType]) -> None:
    """Pickle every frozen dataclass, and every one with its own `__init__` (its fields
    in order), the modules define through its constructor."""
    for module in modules:
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and value.__module__ == module.__name__
                and dataclasses.is_dataclass(value)
                and (
                    value.__dataclass_params__.frozen  # type: ignore[attr-defined]
                    or not value.__dataclass_params__.init  # type: ignore[attr-defined]
                )
            ):
                copyreg.pickle(value, _by_constructor)
