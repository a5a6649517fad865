"""Free text that faceindex stores and later shows: one validator for every way in, one escaper for every way out.

Purposes, case references, names, reasons, notices and key names end up in the audit log and on auditors'
terminals and web pages. A value with terminal escape codes, bidirectional overrides or nothing visible in it can
forge a log line on screen or make two different values look the same, so `check_text` refuses them at the
Python API (and so at the CLI and the HTTP API, which call it), and `shown` escapes whatever an older version
stored before a human-readable output prints it.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

# Characters that reorder or hide text around them (Trojan Source): overrides, embeddings, isolates, marks.
BIDI_CONTROLS: Final = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Invisible on their own: format characters (zero-width space/joiners, BOM, soft hyphen...), separators,
# combining marks with nothing to sit on.
_INVISIBLE_CATEGORIES: Final = frozenset({"Cf", "Zs", "Zl", "Zp", "Mn", "Me"})
# Never printable: controls, line/paragraph separators, surrogates, private use and unassigned code points.
_REFUSED_CATEGORIES: Final = frozenset({"Cc", "Zl", "Zp", "Cs", "Co", "Cn"})

MAX_SHORT: Final = 200  # names, purposes, references, reasons
MAX_LONG: Final = 2000  # notices


def _describe(ch: str) -> str:
    return f"U+{ord(ch):04X} {unicodedata.name(ch, '').lower()}".strip()


def check_text(value: object, what: str, *, max_len: int = MAX_SHORT, optional: bool = False) -> str | None:
    """`value` stripped of surrounding white space, or ValueError naming `what` and the problem.

    Refused: non-strings, blank or invisible-only values (zero-width characters alone), control characters
    (escape codes, new lines, tabs), bidirectional overrides and isolates, unassigned/private/surrogate code
    points, and values longer than `max_len` characters. With `optional`, None passes through as None.
    """
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text, not {type(value).__name__}")
    text = value.strip()
    if not text:
        raise ValueError(f"{what} must not be blank")
    if len(text) > max_len:
        raise ValueError(f"{what} is {len(text)} characters long; at most {max_len} are allowed")
    for ch in text:
        if ch in BIDI_CONTROLS:
            raise ValueError(f"{what} contains a bidirectional control character ({_describe(ch)})")
        if unicodedata.category(ch) in _REFUSED_CATEGORIES:
            raise ValueError(f"{what} contains a control or non-printable character ({_describe(ch)})")
    if all(unicodedata.category(ch) in _INVISIBLE_CATEGORIES for ch in text):
        raise ValueError(f"{what} has no visible characters")
    return text


def shown(value: object) -> str:
    """`value` as text safe to print on a terminal or in a one-line log: every control, format, bidirectional
    or non-printable character (and the backslash, so the escape is unambiguous) as a \\uXXXX escape."""
    text = "" if value is None else str(value)
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch in BIDI_CONTROLS or cat in _REFUSED_CATEGORIES or cat == "Cf":
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    return "".join(out)


_IDENTITY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def check_identity(value: object, what: str = "a key name") -> str:
    """A name that identifies a person or service in the audit trail (an API key's name): 1-64 ASCII letters,
    digits and . _ @ - starting with a letter or digit. No spaces or brackets, so that no chosen name can read
    like someone else's actor string ("alice (key 2)"), and no look-alike letters from other scripts."""
    text = check_text(value, what, max_len=64)
    assert text is not None
    if not _IDENTITY.fullmatch(text):
        raise ValueError(f"{what} must be 1-64 ASCII letters, digits and . _ @ - (starting with a letter or digit), "
                         f"not {shown(text)!r}")
    return text


def identity_key(name: str) -> str:
    """The form two names that read alike share ("Alice", "alice", "a.lice" differ; "Alice" and "alice" do not)."""
    return name.casefold()
