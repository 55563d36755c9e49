"""Reading a Researcher's answer: hypothesis, rationale, and a program (diff or full rewrite).

The answer format (see prompts/researcher_system.md):

    HYPOTHESIS: one or two sentences
    RATIONALE: why this change should help, from the evidence
    then either SEARCH/REPLACE blocks against the parent program

        <<<<<<< SEARCH
        lines copied verbatim from the parent
        =======
        the new lines
        >>>>>>> REPLACE

    or the whole new program in one ```python block.

`parse_answer` returns a `ResearchAnswer` or raises `AnswerError` with a message precise enough to
be sent back to the model for its one repair attempt (which block did not match, which line does
not compile, ...).
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from sandbox import PolicyCompileError
from sandbox.compile import check_source

DIFF_RE = re.compile(
    r"^[ \t]*<{5,9}[ \t]*SEARCH[ \t]*\r?\n(?P<search>.*?)^[ \t]*={5,9}[ \t]*\r?\n"
    r"(?P<replace>.*?)^[ \t]*>{5,9}[ \t]*REPLACE[ \t]*$", re.S | re.M)
MARKER_RE = re.compile(r"^[ \t]*(<{5,9}[ \t]*SEARCH|>{5,9}[ \t]*REPLACE)", re.M)
FENCE_RE = re.compile(r"^[ \t]*```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)^[ \t]*```[ \t]*$",
                      re.S | re.M)
SECTION_RE = re.compile(
    r"^[ \t>*#_-]*(hypothesis|rationale)[ \t*_]*[:\-–][ \t*_]*(.*?)"
    r"(?=^[ \t>*#_-]*(?:hypothesis|rationale)[ \t*_]*[:\-–]|^[ \t]*```|^[ \t]*<{5,9}|\Z)",
    re.S | re.M | re.I)
HEADING_RE = re.compile(r"^#{1,6}[ \t]*(hypothesis|rationale)[ \t]*\n(.*?)(?=^#{1,6}[ \t]|"
                        r"^[ \t]*```|^[ \t]*<{5,9}|\Z)", re.S | re.M | re.I)
MAX_TEXT = 1200


class AnswerError(ValueError):
    """The answer cannot be turned into a valid child program; the message says exactly why."""


@dataclass
class ResearchAnswer:
    source: str
    hypothesis: str
    rationale: str
    form: str                 # "diff" | "full"
    blocks: int = 0           # SEARCH/REPLACE blocks applied


def _clean(text: str) -> str:
    text = " ".join(text.replace("**", "").split())
    return text[:MAX_TEXT]


def _sections(text: str) -> dict[str, str]:
    """HYPOTHESIS / RATIONALE sections, as "Label: text" lines or as markdown headings."""
    out: dict[str, str] = {}
    for regex in (SECTION_RE, HEADING_RE):
        for m in regex.finditer(text):
            key = m.group(1).lower()
            if key not in out and m.group(2).strip():
                out[key] = _clean(m.group(2))
    return out


def _prose(text: str) -> str:
    """The answer's text before its first code or diff block (a rationale when none is marked)."""
    cut = len(text)
    for regex in (FENCE_RE, MARKER_RE):
        m = regex.search(text)
        if m:
            cut = min(cut, m.start())
    return _clean(text[:cut])


def apply_diff(parent: str, blocks: list[tuple[str, str]]) -> str:
    """Apply SEARCH/REPLACE blocks in order; each SEARCH must match exactly one place."""
    source = parent
    for i, (search, replace) in enumerate(blocks, 1):
        if not search.strip():
            raise AnswerError(f"SEARCH/REPLACE block {i} has an empty SEARCH part: copy the "
                              f"lines to change from the parent program")
        count = source.count(search)
        if count == 1:
            source = source.replace(search, replace, 1)
            continue
        if count > 1:
            raise AnswerError(f"SEARCH block {i} matches {count} places in the program; include "
                              f"more surrounding lines so it matches exactly one")
        # Tolerate trailing whitespace and surrounding blank lines, nothing more.
        hit = _loose_find(source, search)
        if hit is None:
            first = next((ln for ln in search.splitlines() if ln.strip()), "")
            raise AnswerError(f"SEARCH block {i} does not match the current program (after the "
                              f"blocks before it); its first line was {first.strip()!r}. Copy "
                              f"the lines verbatim from the parent program, indentation "
                              f"included")
        start, end = hit
        lines = source.splitlines(keepends=True)
        new = replace if replace.endswith("\n") or not replace else replace + "\n"
        source = "".join(lines[:start]) + new + "".join(lines[end:])
    return source


def _loose_find(source: str, search: str) -> tuple[int, int] | None:
    want = [ln.rstrip() for ln in search.strip("\n").splitlines()]
    have = [ln.rstrip() for ln in source.splitlines()]
    n = len(want)
    hits = [i for i in range(len(have) - n + 1) if have[i:i + n] == want]
    if len(hits) != 1:
        return None
    return hits[0], hits[0] + n


def _program_blocks(text: str, entrypoints) -> list[str]:
    blocks = []
    for m in FENCE_RE.finditer(text):
        lang, body = m.group(1).lower(), m.group(2)
        if lang not in ("", "python", "py", "python3"):
            continue
        if any(re.search(rf"^def[ \t]+{e}[ \t]*\(", body, re.M) for e in entrypoints):
            blocks.append(body)
    return blocks


def parse_answer(text: str, parent_source: str, entrypoints) -> ResearchAnswer:
    """The child program an answer describes (diff applied to the parent, or the full program),
    statically checked by the sandbox. AnswerError with the exact reason otherwise."""
    if not text or not text.strip():
        raise AnswerError("the answer was empty")
    sections = _sections(text)
    hypothesis = sections.get("hypothesis", "")
    rationale = sections.get("rationale", "") or _prose(text)
    diffs = [(m.group("search"), m.group("replace")) for m in DIFF_RE.finditer(text)]
    if diffs:
        source, form = apply_diff(parent_source, diffs), "diff"
    elif MARKER_RE.search(text):
        raise AnswerError("a SEARCH/REPLACE block is incomplete: each needs '<<<<<<< SEARCH', "
                          "the old lines, '=======', the new lines, '>>>>>>> REPLACE'")
    else:
        programs = _program_blocks(text, entrypoints)
        if programs:
            source, form = max(programs, key=len), "full"
        elif _is_program(text, entrypoints):
            source, form = text, "full"
        else:
            names = ", ".join(f"def {e}(...)" for e in entrypoints)
            raise AnswerError(f"no code found: give SEARCH/REPLACE blocks against the parent "
                              f"program, or the complete new program (with {names}) in one "
                              f"```python block")
    source = source.strip("\n") + "\n"
    try:
        check_source(source, entrypoints)
    except PolicyCompileError as exc:
        raise AnswerError(f"the new program does not compile: {exc}") from None
    if source.strip() == parent_source.strip():
        raise AnswerError("the new program is identical to the parent program: change something")
    return ResearchAnswer(source=source, hypothesis=hypothesis, rationale=rationale, form=form,
                          blocks=len(diffs))


def _is_program(text: str, entrypoints) -> bool:
    """A bare answer that is itself a program (some local models omit the fence)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return False
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    return all(e in defined for e in entrypoints)
