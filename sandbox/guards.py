"""The restricted runtime a candidate policy executes in.

RestrictedPython only rewrites the candidate's code so that attribute, item,
iteration and write access go through hooks (`_getattr_`, `_write_`, ...); the
hooks themselves, the builtins and the import function are ours. Everything a
policy can touch is assembled by `make_globals`.
"""

from __future__ import annotations

import ast
import builtins
import collections
import functools
import importlib
import operator
import random
import types

from RestrictedPython import RestrictingNodeTransformer
from RestrictedPython.Guards import (
    full_write_guard,
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
    safer_getattr,
    safer_getattr_raise,
)
from RestrictedPython.PrintCollector import PrintCollector
from RestrictedPython.transformer import INSPECT_ATTRIBUTES, IOPERATOR_TO_STR

ALLOWED_IMPORTS = ("math", "statistics", "heapq", "bisect", "itertools", "functools", "collections")

# Attributes without a leading underscore that still lead to frames, code or the
# class hierarchy. RestrictedPython 9 already refuses most of them (INSPECT_ATTRIBUTES);
# listing them here keeps the guarantee independent of its version.
DENIED_ATTRIBUTES = frozenset(INSPECT_ATTRIBUTES) | {
    "gi_frame", "gi_code", "gi_yieldfrom", "cr_frame", "cr_code", "cr_await", "ag_frame", "ag_code",
    "tb_frame", "tb_next", "f_globals", "f_locals", "f_builtins", "f_back", "f_code", "mro",
}

_MISSING = object()
GUARDED_READS = DENIED_ATTRIBUTES | {"format", "format_map"}

# Test-only switch: False hands out the old uncurated module proxies (every public name of an
# allowed module) and turns the compile-time name checks off, so that a test can show what the
# layers below the language layer contain on their own. Tests monkeypatch it; nothing else
# may. Worker processes inherit it when they fork after the patch.
_CURATED = True

# The one home of the allowed surface: every name a policy can reach in an allowed module or in
# its builtins. A name that is not listed does not exist for a policy (AttributeError at run
# time; a line-numbered PolicyCompileError where it is statically visible). docs/sandbox.md is
# generated from this table and the notes below (`sandbox.guards.write_doc()`).
#
# Left out, and why (see docs/sandbox.md):
# - functools.singledispatch / singledispatchmethod: register() evaluates the string
#   annotations of the policy's function with plain eval (typing.get_type_hints);
# - functools.update_wrapper / wraps: getattr/setattr of caller-chosen attribute names;
# - functools.cached_property: returns instance.__dict__[name] for a name the caller sets;
# - functools.partialmethod: descriptor protocol on arbitrary callables, no use to a policy;
# - functools.namedtuple, collections.namedtuple, statistics.namedtuple: build classes with exec;
# - functools.WRAPPER_*, RLock, GenericAlias, get_cache_token, recursive_repr: plumbing;
# - collections.abc, collections.User*: abstract bases / wrappers, nothing a policy needs;
# - collections.ChainMap: writes into maps[0] with a plain __setitem__ (no write guard);
# - the names other modules re-export (statistics.sys, statistics.random, statistics.Fraction,
#   statistics.Decimal, statistics.numbers, ...): foreign modules and classes.
ALLOWED_SURFACE: dict[str, tuple[str, ...]] = {
    "builtins": (
        # constants
        "None", "False", "True", "Ellipsis",
        # types and conversions
        "bool", "int", "float", "complex", "str", "list", "tuple", "dict", "set", "frozenset",
        "range", "slice",
        # functions
        "abs", "all", "any", "callable", "chr", "divmod", "enumerate", "filter", "hash", "hex",
        "id", "isinstance", "issubclass", "iter", "len", "map", "max", "min", "next", "oct", "ord",
        "pow", "repr", "reversed", "round", "sorted", "sum", "zip",
        # guarded replacements
        "getattr", "hasattr", "setattr", "delattr", "__import__", "__build_class__",
        # the curated math namespace, also without an import (RestrictedPython's habit)
        "math",
        # exceptions (not SystemExit, not KeyboardInterrupt: a policy must not stop its worker)
        "ArithmeticError", "AssertionError", "AttributeError", "BaseException", "BufferError",
        "BytesWarning", "DeprecationWarning", "EOFError", "EnvironmentError", "Exception",
        "FloatingPointError", "FutureWarning", "GeneratorExit", "IOError", "ImportError",
        "ImportWarning", "IndentationError", "IndexError", "KeyError", "LookupError",
        "MemoryError", "NameError", "NotImplementedError", "OSError", "OverflowError",
        "PendingDeprecationWarning", "ReferenceError", "RuntimeError", "RuntimeWarning",
        "StopIteration", "SyntaxError", "SyntaxWarning", "SystemError", "TabError", "TypeError",
        "UnboundLocalError", "UnicodeDecodeError", "UnicodeEncodeError", "UnicodeError",
        "UnicodeTranslateError", "UnicodeWarning", "UserWarning", "ValueError", "Warning",
        "ZeroDivisionError",
    ),
    "math": (
        "acos", "acosh", "asin", "asinh", "atan", "atan2", "atanh", "cbrt", "ceil", "comb",
        "copysign", "cos", "cosh", "degrees", "dist", "erf", "erfc", "exp", "exp2", "expm1",
        "fabs", "factorial", "floor", "fmod", "frexp", "fsum", "gamma", "gcd", "hypot",
        "isclose", "isfinite", "isinf", "isnan", "isqrt", "lcm", "ldexp", "lgamma", "log",
        "log10", "log1p", "log2", "modf", "nextafter", "perm", "pow", "prod", "radians",
        "remainder", "sin", "sinh", "sqrt", "tan", "tanh", "trunc", "ulp",
        "e", "inf", "nan", "pi", "tau",
    ),
    "statistics": (
        "correlation", "covariance", "fmean", "geometric_mean", "harmonic_mean",
        "linear_regression", "mean", "median", "median_grouped", "median_high", "median_low",
        "mode", "multimode", "pstdev", "pvariance", "quantiles", "stdev", "variance",
        "NormalDist", "StatisticsError",
    ),
    "heapq": ("heapify", "heappop", "heappush", "heappushpop", "heapreplace", "merge",
              "nlargest", "nsmallest"),
    "bisect": ("bisect", "bisect_left", "bisect_right", "insort", "insort_left", "insort_right"),
    "itertools": (
        "accumulate", "chain", "combinations", "combinations_with_replacement", "compress",
        "count", "cycle", "dropwhile", "filterfalse", "groupby", "islice", "pairwise",
        "permutations", "product", "repeat", "starmap", "takewhile", "tee", "zip_longest",
    ),
    "functools": ("reduce", "partial", "lru_cache", "cache", "cmp_to_key", "total_ordering"),
    "collections": ("deque", "defaultdict", "OrderedDict", "Counter"),
}

# What the doc says about entries that are not the plain CPython object.
SURFACE_NOTES: dict[tuple[str, str], str] = {
    ("builtins", "getattr"): "guarded: no `_` names, no frame/code/inspect names, no `str.format*`, "
                             "no foreign modules; a missing attribute raises",
    ("builtins", "hasattr"): "through the guarded getattr",
    ("builtins", "setattr"): "the write guard: only the policy's own objects and containers; "
                             "no `_` names",
    ("builtins", "delattr"): "as setattr",
    ("builtins", "__import__"): "only the curated modules below (no submodules); "
                                "`from m import x` only for listed names",
    ("builtins", "__build_class__"): "class statements; classes get the PolicyClass metaclass",
    ("builtins", "math"): "the curated math namespace below",
    ("functools", "total_ordering"): "only for classes the policy defines (PolicyClass); it sets "
                                     "fixed comparison names",
}


def _policy_total_ordering(cls):
    """functools.total_ordering, for the policy's own classes only: it sets attributes (fixed
    comparison names) on the class it is given, which must not be one of ours."""
    if not isinstance(cls, PolicyClass):
        raise TypeError("functools.total_ordering only decorates classes the policy defines")
    return functools.total_ordering(cls)


_policy_total_ordering.__name__ = _policy_total_ordering.__qualname__ = "total_ordering"
_OVERRIDES = {("functools", "total_ordering"): _policy_total_ordering}


def not_available_message(module: str, name: str) -> str:
    allowed = ", ".join(ALLOWED_SURFACE.get(module, ()))
    return f"{module}.{name} is not available to policies (allowed: {allowed})"


def forbidden_import_message(name: str) -> str:
    return f"forbidden import '{name}' (allowed: {', '.join(ALLOWED_IMPORTS)})"


def _allowed_module(module: types.ModuleType) -> bool:
    return module.__name__.partition(".")[0] in ALLOWED_IMPORTS


def restricted_import(name, globals=None, locals=None, fromlist=(), level=0):
    """`__import__` for candidates: only the allow-list, handed out as curated namespaces; no
    submodules; `from m import x` only for names in the table."""
    if level != 0:
        raise ImportError("relative imports are not allowed")
    if type(name) is not str:
        raise ImportError("module names must be str")
    if not _CURATED:
        return _uncurated_import(name, fromlist)
    if name not in ALLOWED_IMPORTS:
        raise ImportError(forbidden_import_message(name))
    namespace = curated_module(name)
    for item in fromlist or ():
        if type(item) is not str or item not in ALLOWED_SURFACE[name]:
            raise ImportError(not_available_message(name, str(item)))
    return namespace


def _uncurated_import(name, fromlist):
    """The old behaviour (test-only, `_CURATED = False`): module proxies of all public names."""
    if name.partition(".")[0] not in ALLOWED_IMPORTS:
        raise ImportError(forbidden_import_message(name))
    module = builtins.__import__(name, None, None, fromlist, 0)
    for item in fromlist or ():
        value = getattr(module, item, None)
        if isinstance(value, types.ModuleType) and not _allowed_module(value):
            raise ImportError(forbidden_import_message(value.__name__))
    return module_proxy(module)


_NAMESPACES: dict[str, types.ModuleType] = {}


def curated_module(name: str) -> types.ModuleType:
    """The namespace a policy gets for `import name`: a module object holding exactly the
    table's names (the CPython objects themselves, so reads cost what a module read costs), and
    a module `__getattr__` that explains every other name. Built once per process; policies
    cannot write to it (the write guard refuses modules)."""
    namespace = _NAMESPACES.get(name)
    if namespace is None:
        module = importlib.import_module(name)
        namespace = types.ModuleType(name, getattr(module, "__doc__", None))
        for attr in ALLOWED_SURFACE[name]:
            value = _OVERRIDES.get((name, attr), _MISSING)
            setattr(namespace, attr, getattr(module, attr) if value is _MISSING else value)

        def missing(attr, _module=name):
            if isinstance(attr, str) and attr.startswith("_"):
                raise AttributeError(f"module '{_module}' has no attribute '{attr}'")
            raise AttributeError(not_available_message(_module, str(attr)))
        namespace.__getattr__ = missing
        _NAMESPACES[name] = namespace
    return namespace


_PROXIES: dict[str, types.ModuleType] = {}


def module_proxy(module: types.ModuleType) -> types.ModuleType:
    """Test-only (`_CURATED = False`): a copy of an allowed module's public names without the
    foreign modules it imported (`statistics.sys`); allowed submodules are proxied in turn."""
    proxy = _PROXIES.get(module.__name__)
    if proxy is None:
        proxy = types.ModuleType(module.__name__, getattr(module, "__doc__", None))
        _PROXIES[module.__name__] = proxy
        removed = set()
        for key, value in vars(module).items():
            if key.startswith("_"):
                continue
            if isinstance(value, types.ModuleType):
                if not _allowed_module(value):
                    removed.add(key)
                    continue
                value = module_proxy(value)
            setattr(proxy, key, value)

        def missing(name, _module=module.__name__, _removed=frozenset(removed)):
            if name in _removed:      # say why, as the guard does
                raise AttributeError(f"module '{_module}' attribute '{name}' is a forbidden "
                                     f"module")
            raise AttributeError(f"module '{_module}' has no attribute '{name}'")
        proxy.__getattr__ = missing
    return proxy


def guarded_getattr(ob, name, default=_MISSING):
    """`_getattr_` and `getattr`: RestrictedPython's safer_getattr (no `_x`, no
    str.format attribute walks) plus our denied set, no foreign modules reachable
    through allowed ones (`statistics.sys`), and a missing attribute raises
    AttributeError (safer_getattr would silently return None)."""
    if isinstance(name, str) and name in DENIED_ATTRIBUTES:
        raise AttributeError(f'"{name}" is a restricted attribute name')
    if default is _MISSING:
        value = safer_getattr_raise(ob, name)
    else:
        value = safer_getattr(ob, name, default)
    if isinstance(ob, types.ModuleType) and isinstance(value, types.ModuleType) and not _allowed_module(value):
        raise AttributeError(f"module '{ob.__name__}' attribute '{name}' is a forbidden module")
    return value


def guarded_hasattr(ob, name) -> bool:
    """The builtin hasattr would probe through the real getattr; use the guard."""
    try:
        guarded_getattr(ob, name)
    except (AttributeError, NotImplementedError):
        return False
    return True


def _check_write_name(name) -> None:
    if type(name) is not str:        # a str subclass could lie to startswith
        raise TypeError("attribute name must be str")
    if name.startswith("_") or name.endswith("__roles__"):
        raise AttributeError(f'"{name}" is an invalid attribute name because it starts with "_"')


def guarded_setattr(ob, name, value) -> None:
    """`setattr` for candidates: the same write guard as `ob.name = value`, and no `_` names
    (which `ob.name = ...` cannot spell either)."""
    _check_write_name(name)
    setattr(write_guard(ob), name, value)


def guarded_delattr(ob, name) -> None:
    """`delattr` for candidates, like `guarded_setattr`."""
    _check_write_name(name)
    delattr(write_guard(ob), name)


class PolicyClass(type):
    """Metaclass of classes defined by a candidate, so `_write_` can let a policy
    set attributes on its own instances (`self.x = ...`) and nothing else."""


# Containers a policy builds itself and must be able to fill (`d[k] = v`).
_WRITABLE_TYPES = frozenset({
    dict, list, collections.defaultdict, collections.OrderedDict, collections.Counter, collections.deque,
})


def write_guard(ob):
    """`_write_`: plain containers and the policy's own objects are writable; anything
    else (e.g. the simulator's views) is wrapped so that writes raise TypeError."""
    if type(ob) in _WRITABLE_TYPES or isinstance(type(ob), PolicyClass):
        return ob
    return full_write_guard(ob)


_INPLACE_OPS = {
    "+=": operator.iadd, "-=": operator.isub, "*=": operator.imul, "/=": operator.itruediv,
    "//=": operator.ifloordiv, "%=": operator.imod, "**=": operator.ipow, "<<=": operator.ilshift,
    ">>=": operator.irshift, "&=": operator.iand, "|=": operator.ior, "^=": operator.ixor,
    "@=": operator.imatmul,
}


def inplace_var(op: str, target, value):
    """`_inplacevar_`: `x += y` is rewritten to `x = _inplacevar_('+=', x, y)`."""
    return _INPLACE_OPS[op](target, value)


def inplace_item(ob, index, op: str, value) -> None:
    """`_inplaceitem_`: `ob[i] += y`, written through the write guard."""
    write_guard(ob)[index] = inplace_var(op, ob[index], value)


class PolicyTransformer(RestrictingNodeTransformer):
    """RestrictedPython's policy, except that `counts[k] += 1` is allowed (it refuses
    augmented item assignment outright; LLM-written policies use it constantly).
    It becomes `_inplaceitem_(counts, k, '+=', 1)`, as safe as `counts[k] = counts[k] + 1`."""

    def visit_Attribute(self, node: ast.Attribute):
        """Reading a plain public attribute (`r.free_blocks`) compiles to a plain read: the
        guard call per read cost policies 2-3x their speed. What the guard adds to such a read
        is covered elsewhere: names starting with `_` are refused at compile time (by the
        parent class, for every other case), the inspect and frame names, `mro` and the
        `str.format*` methods still go through `_getattr_`, and allowed modules are handed out
        as proxies without their foreign modules (`statistics.sys`), see `restricted_import`."""
        if (isinstance(node.ctx, ast.Load) and not node.attr.startswith("_")
                and not node.attr.endswith("__roles__") and node.attr not in GUARDED_READS):
            node.value = self.visit(node.value)
            return node
        return super().visit_Attribute(node)

    def visit_AugAssign(self, node: ast.AugAssign):
        target = node.target
        if not isinstance(target, ast.Subscript) or isinstance(target.slice, ast.Slice):
            return super().visit_AugAssign(node)
        call = ast.Call(
            func=ast.Name("_inplaceitem_", ast.Load()),
            args=[self.visit(target.value), self.visit(target.slice),
                  ast.Constant(IOPERATOR_TO_STR[type(node.op)]), self.visit(node.value)],
            keywords=[])
        return ast.fix_missing_locations(ast.copy_location(ast.Expr(call), node))


def _apply(func, *args, **kwargs):
    """`_apply_`: calls with *args / **kwargs."""
    return func(*args, **kwargs)


_BUILTIN_REPLACEMENTS = {
    "getattr": guarded_getattr, "hasattr": guarded_hasattr, "setattr": guarded_setattr,
    "delattr": guarded_delattr, "__import__": restricted_import,
}


def make_builtins() -> dict:
    """Fresh builtins for one policy: exactly `ALLOWED_SURFACE["builtins"]`.

    The CPython builtins of those names, except the guarded replacements (getattr, hasattr,
    setattr, delattr, __import__) and `math` (the curated namespace). Not RestrictedPython's
    utility_builtins: they hand out the `string` module (string.Formatter / Template walk
    attributes by name), the real `math` and `random` modules and `same_type`, `test`,
    `reorder`, none of which a policy needs. limited_builtins is not used either: its `range`
    refuses more than 1000 elements."""
    names = {}
    for name in ALLOWED_SURFACE["builtins"]:
        if name in _BUILTIN_REPLACEMENTS:
            names[name] = _BUILTIN_REPLACEMENTS[name]
        elif name == "math":
            names[name] = curated_module("math")
        else:
            names[name] = getattr(builtins, name)
    return names


def make_globals(seed: int) -> dict:
    """A fresh module namespace with every hook the rewritten code calls."""
    return {
        "__builtins__": make_builtins(),
        "__name__": "policy",
        "__metaclass__": PolicyClass,
        "_getattr_": guarded_getattr,
        "_getitem_": lambda ob, index: ob[index],
        "_getiter_": iter,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        "_unpack_sequence_": guarded_unpack_sequence,
        "_write_": write_guard,
        "_inplacevar_": inplace_var,
        "_inplaceitem_": inplace_item,
        "_apply_": _apply,
        "_print_": PrintCollector,
        "rng": random.Random(seed),
    }


# --- the allowed-surface table of docs/sandbox.md, generated from ALLOWED_SURFACE -----------------
DOC_BEGIN = "<!-- allowed-surface: generated by sandbox.guards.write_doc(); do not edit -->"
DOC_END = "<!-- end of allowed-surface -->"


def allowed_surface_markdown() -> str:
    """The allowed-surface section of docs/sandbox.md, from ALLOWED_SURFACE and SURFACE_NOTES."""
    lines = [DOC_BEGIN, "", "| namespace | names | notes |", "| --- | --- | --- |"]
    for module, names in ALLOWED_SURFACE.items():
        notes = "; ".join(f"`{name}`: {SURFACE_NOTES[(module, name)]}" for name in names
                          if (module, name) in SURFACE_NOTES)
        listed = ", ".join(f"`{name}`" for name in names)
        lines.append(f"| `{module}` | {listed} | {notes} |")
    lines += ["", DOC_END]
    return "\n".join(lines)


def write_doc(path=None) -> None:
    """Rewrite the generated section of docs/sandbox.md from the table."""
    from pathlib import Path
    path = Path(path) if path else Path(__file__).resolve().parent.parent / "docs" / "sandbox.md"
    text = path.read_text()
    start, end = text.index(DOC_BEGIN), text.index(DOC_END) + len(DOC_END)
    path.write_text(text[:start] + allowed_surface_markdown() + text[end:])
