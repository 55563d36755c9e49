"""Turn candidate source into callable entry points, or a precise reason why not.

Every failure a candidate can cause before it is run (bad syntax, a refused
construct, a forbidden import, a crash in the module body, a missing entry
point, malformed KNOBS) becomes a `PolicyCompileError` with a line where one
exists, so the LLM gets feedback it can act on.
"""

from __future__ import annotations

import ast
import importlib
import math
import random
import re
import types
from collections.abc import Sequence
from dataclasses import dataclass, field

from RestrictedPython import compile_restricted_exec

from sandbox import guards
from sandbox.text import escape_char, escape_unprintable, first_unprintable
from sandbox.guards import (
    ALLOWED_IMPORTS,
    ALLOWED_SURFACE,
    PolicyTransformer,
    forbidden_import_message,
    make_globals,
    not_available_message,
)

POLICY_FILENAME = "<policy>"
_RP_ERROR = re.compile(r"^Line (\d+|None): (.*)$", re.S)
_MAX_MESSAGE = 500           # an exception text taken from the candidate
_MAX_REASON = 1500           # a whole compile error (the allowed-names lists are long)
# Knob values and ranges must lie within +-KNOB_BOUND: Optuna and the mutators compute with
# them (high - low overflows to inf for +-1e308).
KNOB_BOUND = 1e9


def clean_text(text: str, limit: int = _MAX_MESSAGE) -> str:
    """Text derived from a candidate, made safe to print: whitespace runs become one space;
    control characters (C0, C1, DEL), format characters (bidi overrides, zero-width, BOM),
    surrogates and line/paragraph separators become `\\x1b`-style escapes; at most `limit`
    characters."""
    text = escape_unprintable(" ".join(str(text).split()))
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return text


class PolicyCompileError(ValueError):
    """A candidate that cannot become a policy; `.line` is None when no line applies."""

    def __init__(self, reason: str, line: int | None = None):
        reason = clean_text(reason, _MAX_REASON)
        self.reason = reason
        self.line = line
        super().__init__(f"line {line}: {reason}" if line is not None else reason)

    def __reduce__(self):  # keep line and reason across process boundaries
        return (type(self), (self.reason, self.line))


@dataclass(eq=False)
class CompiledPolicy:
    """A compiled candidate: its entry points share one namespace holding `rng`."""

    source: str = field(repr=False)
    entrypoints: dict[str, types.FunctionType]
    knob_spec: dict[str, tuple[float, float, float]]
    knobs: dict[str, float]
    namespace: dict = field(repr=False)
    seed: int = 0

    def reseed(self, seed: int) -> None:
        """Give the policy a fresh `random.Random(seed)`, so evaluations are reproducible."""
        self.seed = seed
        self.namespace["rng"] = random.Random(seed)


def policy_traceback(exc: BaseException) -> tuple[str, int | None]:
    """One line naming the candidate's innermost frame, never the engine's:
    ("line 7 in route: ZeroDivisionError: division by zero", 7)."""
    text, line, func = _locate(exc)
    if line is None:
        return text, None
    return f"line {line} in {func}: {text}", line


def _locate(exc: BaseException) -> tuple[str, int | None, str | None]:
    """(exception text, line, function) of the innermost frame compiled from the candidate."""
    line = func = None
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == POLICY_FILENAME:
            line, func = tb.tb_lineno, code.co_name
        tb = tb.tb_next
    try:
        detail = str(exc)
    except Exception:  # a candidate's exception class may have a broken __str__
        detail = ""
    text = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return clean_text(text, _MAX_MESSAGE), line, func


def _restricted_code(source, max_source_bytes: int, max_ast_depth: int):
    """Every check that needs no execution; returns (code object, tree, knob lines)."""
    if not isinstance(source, str):
        raise TypeError(f"source must be str, not {type(source).__name__}")
    if source.startswith("\ufeff"):       # a UTF-8 byte order mark, as editors write it
        source = source[1:]
    raw = first_unprintable(source)
    if raw is not None:     # raw escapes and bidi overrides ("Trojan source") never get stored
        raise PolicyCompileError(f"the source holds a raw control or format character "
                                 f"({escape_char(raw[1])}); write it as an escape in a string "
                                 f"literal", raw[0])
    size = len(source.encode("utf-8", "surrogatepass"))
    if size > max_source_bytes:
        raise PolicyCompileError(f"source is {size} bytes, over the limit of {max_source_bytes}")
    try:
        tree = ast.parse(source, POLICY_FILENAME)
    except SyntaxError as exc:
        raise PolicyCompileError(f"syntax error: {exc.msg}", exc.lineno) from None
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, absurd nesting
        raise PolicyCompileError(f"cannot parse source: {exc}") from None
    _check_depth(tree, max_ast_depth)
    _check_imports(tree)
    knob_lines = _knob_lines(tree)

    try:
        result = compile_restricted_exec(tree, filename=POLICY_FILENAME, policy=PolicyTransformer)
    except RecursionError:
        raise PolicyCompileError("source is nested too deeply to compile") from None
    if result.errors:
        match = _RP_ERROR.match(result.errors[0])
        if match is None:
            raise PolicyCompileError(result.errors[0])
        line = int(match.group(1)) if match.group(1).isdigit() else None
        more = f" (and {len(result.errors) - 1} more)" if len(result.errors) > 1 else ""
        raise PolicyCompileError(match.group(2) + more, line)
    return result.code, tree, knob_lines


def check_source(
    source: str,
    entrypoints: Sequence[str],
    *,
    max_source_bytes: int = 100_000,
    max_ast_depth: int = 60,
) -> dict[str, tuple[float, float, float]]:
    """Static check without running anything (for the engine, which must never execute a
    candidate): restricted compilation, top-level entry points, a literal KNOBS. Returns the
    knob spec; raises PolicyCompileError like `compile_policy`."""
    if isinstance(entrypoints, str):
        entrypoints = (entrypoints,)
    _, tree, knob_lines = _restricted_code(source, max_source_bytes, max_ast_depth)
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    for name in entrypoints:
        if name not in defined:
            raise PolicyCompileError(f"missing entry point '{name}': define a top-level function "
                                     f"'def {name}(...)'")
    knobs = _ABSENT
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "KNOBS" for t in node.targets):
            try:
                knobs = ast.literal_eval(node.value)
            except (ValueError, TypeError, SyntaxError, RecursionError):
                raise PolicyCompileError("KNOBS must be a literal dict of name: (value, low, high)",
                                         node.lineno) from None
    return _parse_knobs(knobs, knob_lines)


def compile_policy(
    source: str,
    entrypoints: Sequence[str],
    *,
    seed: int = 0,
    max_source_bytes: int = 100_000,
    max_ast_depth: int = 60,
) -> CompiledPolicy:
    """Compile and execute `source` in the sandbox; return its entry points and knobs."""
    if isinstance(entrypoints, str):
        entrypoints = (entrypoints,)
    code, _, knob_lines = _restricted_code(source, max_source_bytes, max_ast_depth)

    namespace = make_globals(seed)
    try:
        exec(code, namespace)
    except Exception as exc:
        message, line, _ = _locate(exc)
        raise PolicyCompileError(f"{message} (while executing the module body)", line) from None

    functions = {}
    for name in entrypoints:
        value = namespace.get(name)
        if not isinstance(value, types.FunctionType):
            found = "it is not defined" if value is None else f"it is a {type(value).__name__}"
            raise PolicyCompileError(f"missing entry point '{name}': define a top-level function "
                                     f"'def {name}(...)' ({found})")
        functions[name] = value

    knob_spec = _parse_knobs(namespace.get("KNOBS", _ABSENT), knob_lines)
    return CompiledPolicy(
        source=source,
        entrypoints=functions,
        knob_spec=knob_spec,
        knobs={name: spec[0] for name, spec in knob_spec.items()},
        namespace=namespace,
        seed=seed,
    )


def _check_depth(tree: ast.AST, limit: int) -> None:
    """Deep ASTs crash the compiler with RecursionError; refuse them early (iteratively)."""
    stack = [(tree, 1, None)]
    while stack:
        node, depth, line = stack.pop()
        line = getattr(node, "lineno", line)
        if depth > limit:
            raise PolicyCompileError(f"code is nested too deeply (syntax tree depth over {limit})", line)
        stack.extend((child, depth + 1, line) for child in ast.iter_child_nodes(node))


def _check_imports(tree: ast.AST) -> None:
    """Static allow-list check, so a forbidden import or a name outside the curated table is
    reported with its line even if it sits in a function that never runs. The runtime
    `__import__` and the curated namespaces enforce the same table again."""
    curated = guards._CURATED
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                allowed = (alias.name in ALLOWED_IMPORTS if curated
                           else alias.name.partition(".")[0] in ALLOWED_IMPORTS)
                if not allowed:
                    raise PolicyCompileError(forbidden_import_message(alias.name), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise PolicyCompileError("relative imports are not allowed", node.lineno)
            if not curated:
                _check_uncurated_from(node)
                continue
            if node.module not in ALLOWED_IMPORTS:
                raise PolicyCompileError(forbidden_import_message(node.module), node.lineno)
            for alias in node.names:
                if alias.name == "*":
                    raise PolicyCompileError(f"'from {node.module} import *' is not allowed; "
                                             f"import the names you use", node.lineno)
                if alias.name not in ALLOWED_SURFACE[node.module]:
                    raise PolicyCompileError(not_available_message(node.module, alias.name),
                                             node.lineno)
    if curated:
        _check_module_attributes(tree)


def _check_uncurated_from(node: ast.ImportFrom) -> None:
    """The old check (test-only, `guards._CURATED = False`): no foreign module out of an
    allowed one."""
    if node.module.partition(".")[0] not in ALLOWED_IMPORTS:
        raise PolicyCompileError(forbidden_import_message(node.module), node.lineno)
    module = importlib.import_module(node.module)
    for alias in node.names:
        value = getattr(module, alias.name, None)
        if isinstance(value, types.ModuleType) and value.__name__.partition(".")[0] not in ALLOWED_IMPORTS:
            raise PolicyCompileError(forbidden_import_message(value.__name__), node.lineno)


def _check_module_attributes(tree: ast.AST) -> None:
    """`m.name` where `m` can only be an allowed module (bound by `import m [as a]` and in no
    other way, or the builtin `math` never rebound): `name` must be in the table."""
    imported: dict[str, set[str]] = {}
    other: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                imported.setdefault(alias.asname or alias.name, set()).add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            other.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            other.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            other.add(node.name)
        elif isinstance(node, ast.arg):
            other.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            other.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            other.update(node.names)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            other.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            other.add(node.rest)
    modules = {name: next(iter(found)) for name, found in imported.items()
               if len(found) == 1 and name not in other}
    if "math" not in imported and "math" not in other:
        modules["math"] = "math"            # the builtin math namespace
    if not modules:
        return
    refused = [(node.lineno, modules[node.value.id], node.attr) for node in ast.walk(tree)
               if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
               and node.value.id in modules and not node.attr.startswith("_")
               and node.attr not in ALLOWED_SURFACE.get(modules[node.value.id], ())]
    if refused:
        line, module, name = min(refused)             # the first one in the source
        raise PolicyCompileError(not_available_message(module, name), line)


def _knob_lines(tree: ast.Module) -> dict[str | None, int]:
    """Lines of the top-level `KNOBS = {...}` (key None) and of each literal knob key."""
    lines: dict[str | None, int] = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == "KNOBS" for t in targets):
            lines[None] = node.lineno
            if isinstance(node.value, ast.Dict):
                for key in node.value.keys:
                    if isinstance(key, ast.Constant) and isinstance(key.value, str):
                        lines[key.value] = key.lineno
    return lines


_ABSENT = object()


def _is_number(value) -> bool:
    """Exactly int or float: a subclass could lie in comparisons (`low <= value`)."""
    return type(value) is int or type(value) is float


def _describe(value) -> str:
    """repr() of plain data only: a candidate's own objects are named by type, never asked
    to describe themselves."""
    if type(value) in (int, float, str, bool, type(None)):
        return repr(value)
    if type(value) in (tuple, list) and all(type(x) in (int, float, str, bool, type(None))
                                            for x in value):
        return repr(value)
    return f"a {type(value).__name__}"


def _parse_knobs(knobs, lines: dict[str | None, int]) -> dict[str, tuple[float, float, float]]:
    """Validate KNOBS = {name: (value, low, high)}; numbers keep their type (int or float)."""
    if knobs is _ABSENT:
        return {}
    where = lines.get(None)
    if type(knobs) is not dict:
        raise PolicyCompileError(
            f"KNOBS must be a dict of name: (value, low, high), not {type(knobs).__name__}", where)
    spec = {}
    for name, entry in knobs.items():
        if type(name) is not str:
            raise PolicyCompileError(f"KNOBS key {_describe(name)} must be a str", where)
        line = lines.get(name, where)
        if type(entry) not in (tuple, list) or len(entry) != 3:
            raise PolicyCompileError(f"knob '{name}' must be a (value, low, high) tuple, got "
                                     f"{_describe(entry)}", line)
        if any(isinstance(x, bool) for x in entry):
            raise PolicyCompileError(f"knob '{name}' uses a bool; use numbers (int or float)", line)
        if not all(_is_number(x) for x in entry):
            raise PolicyCompileError(f"knob '{name}' must hold numbers (int or float), got "
                                     f"{_describe(entry)}", line)
        if not all(math.isfinite(x) for x in entry):
            raise PolicyCompileError(f"knob '{name}' must hold finite numbers, got {entry!r}", line)
        if not all(abs(x) <= KNOB_BOUND for x in entry):
            raise PolicyCompileError(f"knob '{name}' must hold numbers within +-{KNOB_BOUND:g} "
                                     f"(value, low and high), got {entry!r}", line)
        value, low, high = entry
        if low > high:
            raise PolicyCompileError(f"knob '{name}' has low {low} > high {high}", line)
        if not low <= value <= high:
            raise PolicyCompileError(f"knob '{name}' value {value} is outside [{low}, {high}]", line)
        spec[name] = (value, low, high)
    return spec
