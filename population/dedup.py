"""Duplicate detection: a hash of a program's normalised AST.

Two sources get the same hash when they differ only in whitespace, comments, docstrings, string
prefixes (u"") or the *values* of the top-level `KNOBS` dict literal (each knob's first tuple
element; its name and low/high bounds still count). Any other change to the code changes the
hash. Knob values are ignored because tuning owns them: a program that differs from a stored one
only in knob values is the same program, to be tuned rather than re-evaluated.

The hash depends on the Python version's AST layout (`ast.dump`), so it is stable within one
interpreter version, which is all a run needs.
"""
from __future__ import annotations

import ast
import hashlib

KNOBS_NAME = "KNOBS"
_KNOB_PLACEHOLDER = "<knob value>"
_DOC_OWNERS = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def code_hash(source: str) -> str:
    """sha256 hex digest of `source`'s normalised AST.

    Sources that do not parse (or are too deeply nested for the parser) hash their text with
    trailing whitespace and blank lines removed, in a separate namespace so that text hashes
    never collide with AST hashes. Never raises for a str.
    """
    if not isinstance(source, str):
        raise TypeError(f"code_hash expects str, got {type(source).__name__}")
    text = source.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    try:
        tree = ast.parse(text)
        _normalise(tree)
        dump = ast.dump(tree, annotate_fields=False, include_attributes=False)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        stripped = "\n".join(line.rstrip() for line in text.split("\n") if line.strip())
        return _sha("text1\0" + stripped)
    return _sha("ast1\0" + dump)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _normalise(tree: ast.Module) -> None:
    for node in list(ast.walk(tree)):
        if isinstance(node, _DOC_OWNERS):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                rest = body[1:]
                node.body = rest if (rest or isinstance(node, ast.Module)) else [ast.Pass()]
        elif isinstance(node, ast.Constant):
            node.kind = None          # u"x" and "x" are the same string
    for stmt in tree.body:
        value = None
        if isinstance(stmt, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == KNOBS_NAME for t in stmt.targets):
            value = stmt.value
        elif (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
              and stmt.target.id == KNOBS_NAME):
            value = stmt.value
        if isinstance(value, ast.Dict):
            _blank_knob_values(value)


def _blank_knob_values(knobs: ast.Dict) -> None:
    """`{"name": (value, low, high)}` -> `{"name": (<placeholder>, low, high)}`.

    A knob given as a bare value (`"name": 0.5`) has its whole value replaced.
    """
    for i, spec in enumerate(knobs.values):
        if isinstance(spec, (ast.Tuple, ast.List)) and spec.elts:
            spec.elts[0] = ast.Constant(value=_KNOB_PLACEHOLDER)
        else:
            knobs.values[i] = ast.Constant(value=_KNOB_PLACEHOLDER)
