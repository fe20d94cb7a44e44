"""Counts in words, for what the CLI prints."""

from __future__ import annotations


def plural(count: float, word: str) -> str:
    """'1 GPU', '8 GPUs', '1.5 days': one of a thing takes the word as it is (the
    tables said "1 GPUs"), any other count its plural in -s."""
    shown = f"{count:g}" if isinstance(count, float) else str(count)
    return f"{shown} {word}" if count == 1 else f"{shown} {word}s"
