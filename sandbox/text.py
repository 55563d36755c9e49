"""One rule for showing text that came from a candidate or a model: every character that is not
printable (C0 / C1 controls, DEL, bidi overrides and other format characters, surrogates, line
and paragraph separators) is written as a Python-style escape (`\\x1b`, `\\u202e`), so no
terminal, editor or log viewer acts on it. `sandbox.compile` uses it for its messages and
`glia_evo.hygiene` for everything else."""
from __future__ import annotations

import unicodedata


def escape_char(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape_unprintable(text: str, keep: str = " ") -> str:
    """`text` with every unprintable character not in `keep` escaped."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in keep else escape_char(ch) for ch in text)


def first_unprintable(text: str, allowed: str = "\n\t\r\f ") -> tuple[int, str] | None:
    """(line, character) of the first unprintable character not in `allowed`, or None; spaces
    of any kind (Unicode category Zs, e.g. a no-break space) are harmless and pass."""
    if text.isprintable():
        return None
    for line, row in enumerate(text.split("\n"), 1):
        for ch in row:
            if not ch.isprintable() and ch not in allowed and unicodedata.category(ch) != "Zs":
                return line, ch
    return None
