"""Text that came from a candidate or an LLM, made safe to show, store or send.

Every string a candidate program or a model produced (error messages, rationales, hypotheses,
summaries, notes) is hostile: it may carry terminal escapes (ESC, BEL, CR rewriting a line),
bidi overrides that make text read differently than it is, megabytes of padding, or a secret
it managed to read. `clean(text)` is the one gate such a string passes before it reaches a
terminal, a file header, a prompt, the event log, the state file or MLflow:

- the values of registered secrets (the API key of the run's endpoint, registered by whoever
  reads it) are replaced by `[redacted]`;
- every unprintable character (C0 / C1 controls but newline and tab where `multiline=True`,
  DEL, bidi / zero-width format characters) is shown escaped (`\\x1b`, `\\u202e`), by the
  sandbox's one rule (`sandbox.text.escape_unprintable`);
- the result is at most `limit` characters (cut with a marker saying so).
"""
from __future__ import annotations

import os
import threading

from sandbox.text import escape_unprintable

REDACTED = "[redacted]"
DEFAULT_LIMIT = 2000
_MIN_SECRET = 6          # shorter values are too likely to occur by chance

_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Never let `value` out: every later `clean` redacts it."""
    if value and len(value) >= _MIN_SECRET:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def clean(text, limit: int | None = DEFAULT_LIMIT, *, multiline: bool = False) -> str:
    """`text` (any object; None stays "") redacted, escaped and bounded; see the module doc."""
    if text is None:
        return ""
    if not isinstance(text, str):
        try:
            text = str(text)
        except Exception:   # noqa: BLE001 - a hostile __str__
            text = f"<unprintable {type(text).__name__}>"
    if limit is not None and len(text) > 4 * limit + 4096:   # bound the work before scanning
        text = text[:4 * limit + 4096]
    text = escape_unprintable(redact(text), " \n\t" if multiline else " ")
    if limit is not None and len(text) > limit:
        text = text[:max(0, limit - 14)] + " [... cut off]"
    return text


def clean_line(text, limit: int | None = DEFAULT_LIMIT) -> str:
    """`clean` for one line: newlines and tabs are escaped too."""
    return clean(text, limit, multiline=False)


def clean_tree(value, limit: int = DEFAULT_LIMIT, *, depth: int = 0):
    """Every string inside a JSON-like value cleaned (keys too); other leaves unchanged."""
    if isinstance(value, str):
        return clean(value, limit)
    if depth > 32:
        return None
    if isinstance(value, dict):
        return {clean(k, 200): clean_tree(v, limit, depth=depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_tree(v, limit, depth=depth + 1) for v in value]
    return value

