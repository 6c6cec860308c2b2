"""Counts in words for messages and figures: "1 image", "2 images"."""

from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """``n`` and ``word``, in the plural (``many``, else ``word + "s"``) unless ``n`` is 1."""
    return f"{n} {word if n == 1 else (many or word + 's')}"
