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
from dataclasses import dataclass, field

from sandbox import PolicyCompileError
from sandbox.compile import check_source

DIFF_RE = re.compile(
    r"^[ \t]*<{5,9}[ \t]*SEARCH[ \t]*\r?\n(?P<search>.*?)^[ \t]*={5,9}[ \t]*\r?\n"
    r"(?P<replace>.*?)^[ \t]*>{5,9}[ \t]*REPLACE[ \t]*$", re.S | re.M)
MARKER_RE = re.compile(r"^[ \t]*(<{5,9}[ \t]*SEARCH|>{5,9}[ \t]*REPLACE)", re.M)
FENCE_RE = re.compile(r"^[ \t]*```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)^[ \t]*```[ \t]*$",
                      re.S | re.M)
SECTION_RE = re.compile(
    r"^[ \t>*#_-]*(hypothesis|rationale|conclusion)[ \t*_]*[:\-–][ \t*_]*(.*?)"
    r"(?=^[ \t>*#_-]*(?:hypothesis|rationale|conclusion|experiment)[ \t*_]*[:\-–]|^[ \t]*```|"
    r"^[ \t]*<{5,9}|\Z)", re.S | re.M | re.I)
HEADING_RE = re.compile(r"^#{1,6}[ \t]*(hypothesis|rationale|conclusion)[ \t]*\n(.*?)"
                        r"(?=^#{1,6}[ \t]|^[ \t]*```|^[ \t]*<{5,9}|\Z)", re.S | re.M | re.I)
MAX_TEXT = 1200


class AnswerError(ValueError):
    """The answer cannot be turned into a valid child program; the message says exactly why.
    `kind` names the reason shortly (for counts): empty, no_code, diff, compile, signature,
    noop, truncated, echo."""

    def __init__(self, message: str, kind: str = "other"):
        super().__init__(message)
        self.kind = kind


# Phrases of instructions, not of a hypothesis: an answer whose HYPOTHESIS is one of them (or a
# sentence of the system prompt) copied the template instead of thinking.
TEMPLATE_PHRASES = ("one or two sentences", "a short paragraph", "what limits the parent program",
                    "your hypothesis", "your own hypothesis", "the evidence behind the hypothesis",
                    "lines copied from the parent program", "the lines that replace them")


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(
                    getattr(body[0], "value", None), ast.Constant) and isinstance(
                    body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def normalised(source: str) -> str | None:
    """The program's AST without docstrings (comments and formatting never reach the AST), as
    `ast.dump` text; None when it does not parse."""
    try:
        return ast.dump(_strip_docstrings(ast.parse(source)))
    except (SyntaxError, ValueError):
        return None


def signatures(problem) -> dict[str, list[str]]:
    """Entry point -> its parameter names, read from the problem's reference baseline (the
    simulator calls every entry point positionally with exactly these arguments)."""
    out: dict[str, list[str]] = {}
    try:
        tree = ast.parse(problem.baseline_source(problem.reference))
    except Exception:   # noqa: BLE001 - no baseline: no signature check
        return out
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in problem.entrypoints:
            out[node.name] = [a.arg for a in node.args.posonlyargs + node.args.args]
    return out


def signature_text(name: str, params) -> str:
    return f"def {name}({', '.join(params)}):"


def example_program(problem) -> str:
    """A minimal complete program with the problem's real entry points: its reference baseline
    without docstrings (so small models see one whole valid answer)."""
    try:
        tree = _strip_docstrings(ast.parse(problem.baseline_source(problem.reference)))
        return ast.unparse(tree).strip() + "\n"
    except Exception:   # noqa: BLE001
        sigs = signatures(problem)
        return "".join(f"{signature_text(e, sigs.get(e, ['...']))}\n    return []\n\n"
                       for e in problem.entrypoints)


def check_signatures(source: str, sigs: dict[str, list[str]]) -> None:
    """AnswerError(kind "signature") unless every entry point in `sigs` is a plain top-level
    function taking exactly the expected parameters, in order."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return
    defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    for name, params in sigs.items():
        node = defs.get(name)
        if node is None:
            continue
        want = signature_text(name, params)
        a = node.args
        got = [x.arg for x in a.posonlyargs + a.args]
        required_kw = [x.arg for x, d in zip(a.kwonlyargs, a.kw_defaults) if d is None]
        have = f"def {name}({', '.join(got + (['*' + a.vararg.arg] if a.vararg else []))}):"
        if isinstance(node, ast.AsyncFunctionDef):
            why = "it is `async def`"
        elif required_kw:
            why = f"it has keyword-only parameters {', '.join(required_kw)}"
        elif got != params and not (a.vararg and got == params[:len(got)]):
            if len(got) != len(params):
                why = (f"it takes {len(got)} parameter{'s' * (len(got) != 1)}, the simulator "
                       f"passes {len(params)}")
            else:
                why = "its parameters have other names or another order"
            why += f" (yours: `{have}`)"
        else:
            continue
        raise AnswerError(f"`{name}` has the wrong signature: {why}. The simulator calls "
                          f"{name}({', '.join(params)}); define it exactly as `{want}`",
                          "signature")


def is_echo(text: str, prompt: str = "") -> bool:
    """True when `text` (a hypothesis) is template or instruction text rather than the model's
    own: a known placeholder phrase, or a sentence copied from `prompt`."""
    norm = " ".join(re.sub(r"[^a-z0-9 ]+", " ", text.lower()).split())
    if not norm:
        return False
    if any(p in norm for p in TEMPLATE_PHRASES) and len(norm.split()) < 40:
        return True
    if prompt and len(norm.split()) >= 4:
        hay = " ".join(re.sub(r"[^a-z0-9 ]+", " ", prompt.lower()).split())
        return norm in hay
    return False


@dataclass
class ResearchAnswer:
    source: str
    hypothesis: str
    rationale: str
    form: str                 # "diff" | "full"
    blocks: int = 0           # SEARCH/REPLACE blocks applied
    conclusion: str = ""      # a research turn's CONCLUSION (what its experiments showed)
    experiments: list = field(default_factory=list)   # the turn's experiment records


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


def parse_answer(text: str, parent_source: str, entrypoints, *, sigs=None,
                 finish_reason: str | None = None, prompt: str = "") -> ResearchAnswer:
    """The child program an answer describes (diff applied to the parent, or the full program),
    statically checked by the sandbox, with the entry points' exact signatures (`sigs`: name ->
    parameter names), and a real change (not only docstrings, comments or formatting).
    AnswerError with the exact reason otherwise; an answer the server cut off
    (`finish_reason == "length"`) that is unusable asks for a shorter one. A HYPOTHESIS that
    repeats template text or a sentence of `prompt` (the system prompt) is refused."""
    try:
        return _parse(text, parent_source, entrypoints, sigs or {}, prompt)
    except AnswerError as exc:
        if finish_reason == "length" and exc.kind not in ("signature", "noop", "echo"):
            raise AnswerError(
                f"your answer was cut off at the output token limit (finish_reason \"length\"), "
                f"so it is incomplete ({exc}). Answer much shorter: one HYPOTHESIS line, one "
                f"RATIONALE line, then only SEARCH/REPLACE blocks for the few lines you change "
                f"(no complete program, no explanations)", "truncated") from None
        raise


def _parse(text, parent_source, entrypoints, sigs, prompt) -> ResearchAnswer:
    if not text or not text.strip():
        raise AnswerError("the answer was empty", "empty")
    sections = _sections(text)
    hypothesis = sections.get("hypothesis", "")
    rationale = sections.get("rationale", "") or _prose(text)
    diffs = [(m.group("search"), m.group("replace")) for m in DIFF_RE.finditer(text)]
    if diffs:
        try:
            source, form = apply_diff(parent_source, diffs), "diff"
        except AnswerError as exc:
            exc.kind = "diff"
            raise
    elif MARKER_RE.search(text):
        raise AnswerError("a SEARCH/REPLACE block is incomplete: each needs '<<<<<<< SEARCH', "
                          "the old lines, '=======', the new lines, '>>>>>>> REPLACE'", "diff")
    else:
        programs = _program_blocks(text, entrypoints)
        if programs:
            source, form = max(programs, key=len), "full"
        elif _is_program(text, entrypoints):
            source, form = text, "full"
        else:
            names = ", ".join(f"`{signature_text(e, sigs[e])}`" if e in sigs else f"`{e}`"
                              for e in entrypoints)
            raise AnswerError(f"no code found: give SEARCH/REPLACE blocks against the parent "
                              f"program, or the complete new program (defining {names}) in one "
                              f"```python block", "no_code")
    source = source.strip("\n") + "\n"
    check_signatures(source, sigs)
    try:
        check_source(source, entrypoints)
    except PolicyCompileError as exc:
        raise AnswerError(f"the new program does not compile: {exc}", "compile") from None
    if source.strip() == parent_source.strip():
        raise AnswerError("the new program is identical to the parent program: change something",
                          "noop")
    mine, theirs = normalised(source), normalised(parent_source)
    if mine is not None and mine == theirs:
        raise AnswerError("the new program does exactly what the parent program does: only "
                          "docstrings, comments or formatting differ. Change the code itself "
                          "(a condition, an order, a constant) to test your hypothesis", "noop")
    if hypothesis and is_echo(hypothesis, prompt):
        raise AnswerError("the HYPOTHESIS repeats the instructions instead of stating yours: "
                          "write in your own words what limits the parent program and what "
                          "your change does about it", "echo")
    return ResearchAnswer(source=source, hypothesis=hypothesis, rationale=rationale, form=form,
                          blocks=len(diffs), conclusion=sections.get("conclusion", ""))


def _is_program(text: str, entrypoints) -> bool:
    """A bare answer that is itself a program (some local models omit the fence)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return False
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    return all(e in defined for e in entrypoints)
