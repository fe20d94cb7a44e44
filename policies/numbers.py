"""How a number is written in fairpool's text inputs: trace CSV columns and the money of a
policy."""

from __future__ import annotations

import re

DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
"""A number in ASCII decimal notation, as a CSV writer or `str(Decimal)` writes one.
Python's `float`, `int` and `Decimal` also take `3_600` and digits of any script
(`３６００`, `٣٦٠٠`; `Decimal("2_4")` is 24): text holding them was not written by a tool
that meant that number, so the inputs refuse it with its line and field instead of
guessing."""

INTEGER = re.compile(r"[+-]?[0-9]+")
"""The same, for a whole number written with digits only."""
