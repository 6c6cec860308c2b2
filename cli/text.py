"""Text from files (names, labels) made safe to print on a terminal.

A file name may hold escape sequences (``\\x1b]0;...``, ``\\x1b[2J``) that rewrite the terminal's title, clear
it or hide what follows, and bidirectional overrides that show a name backwards. Every path or label a
command prints goes through :func:`printable`: control characters are shown as Python escapes instead.
"""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional overrides/isolates
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text) -> str:
    """``text`` with terminal control characters written as escapes (``\\x1b``, ``\\u202e``)."""
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))
