"""Reading the small CSV files a user gives (manifests, split files, override tables) with one set of rules.

UTF-8 with or without a byte-order mark (spreadsheets write one, and it would hide the header's first
name); a cell longer than any path (Python's csv limit, 131,072 characters), a NUL byte or text that
is not UTF-8 is one :class:`~embedkit.errors.ConfigError` naming the file and the row, not a traceback.
"""

from __future__ import annotations

import csv
from pathlib import Path

from embedkit.errors import ConfigError


def read_csv(path: str | Path, what: str, expected: str) -> list[list[str]]:
    """The rows of CSV file ``path`` (blank rows left out). ``what`` names the file in errors ("manifest"),
    ``expected`` says what it should hold ("a CSV with a path column")."""
    path = Path(path)
    rows: list[list[str]] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            for row in reader:
                if row and any(c.strip() for c in row):
                    rows.append(row)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {str(path)!r} is not UTF-8 text ({exc.reason} at byte {exc.start}); give "
                          f"{expected}") from exc
    except csv.Error as exc:  # a 20 MB cell, a NUL byte: not a table of paths
        raise ConfigError(f"{what} {str(path)!r} cannot be read as CSV at line {reader.line_num} ({exc}); give "
                          f"{expected}") from exc
    return rows
