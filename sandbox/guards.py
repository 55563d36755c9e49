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
import operator
import random
import types

from RestrictedPython import RestrictingNodeTransformer
from RestrictedPython.Guards import (
    full_write_guard,
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
    safe_builtins,
    safer_getattr,
    safer_getattr_raise,
)
from RestrictedPython.PrintCollector import PrintCollector
from RestrictedPython.transformer import INSPECT_ATTRIBUTES, IOPERATOR_TO_STR
from RestrictedPython.Utilities import utility_builtins

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


def forbidden_import_message(name: str) -> str:
    return f"forbidden import '{name}' (allowed: {', '.join(ALLOWED_IMPORTS)})"


def _allowed_module(module: types.ModuleType) -> bool:
    return module.__name__.partition(".")[0] in ALLOWED_IMPORTS


def restricted_import(name, globals=None, locals=None, fromlist=(), level=0):
    """`__import__` for candidates: only the allow-list, and `from m import x` may not
    pull a foreign module out of an allowed one (`from statistics import sys`)."""
    if level != 0:
        raise ImportError("relative imports are not allowed")
    if name.partition(".")[0] not in ALLOWED_IMPORTS:
        raise ImportError(forbidden_import_message(name))
    module = builtins.__import__(name, None, None, fromlist, 0)
    for item in fromlist or ():
        value = getattr(module, item, None)
        if isinstance(value, types.ModuleType) and not _allowed_module(value):
            raise ImportError(forbidden_import_message(value.__name__))
    return module_proxy(module)


_PROXIES: dict[str, types.ModuleType] = {}


def module_proxy(module: types.ModuleType) -> types.ModuleType:
    """A copy of an allowed module's public names without the foreign modules it imported
    (`statistics.sys`, `collections.abc.sys`); allowed submodules are proxied in turn.
    Candidates read module attributes without a guard call, so this is what keeps them in."""
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


def make_builtins() -> dict:
    """Fresh builtins for one policy.

    RestrictedPython's safe_builtins and utility_builtins (minus its `random`
    modules: the seeded `rng` is the only randomness), plus the everyday builtins
    it leaves out. limited_builtins is deliberately not used: its `range` refuses
    more than 1000 elements and its list/tuple only matter with a guarded
    `_getiter_`, which we do not need (plain `iter`)."""
    names = dict(safe_builtins)
    names.update({k: v for k, v in utility_builtins.items() if k not in ("random", "whrandom")})
    for name in ("SystemExit", "KeyboardInterrupt"):  # a policy must not stop its worker
        names.pop(name, None)
    names.update(
        min=min, max=max, sum=sum, sorted=sorted, enumerate=enumerate, len=len, range=range,
        abs=abs, round=round, any=any, all=all, zip=zip, map=map, filter=filter, list=list,
        dict=dict, set=set, frozenset=frozenset, tuple=tuple, float=float, int=int, bool=bool,
        str=str, isinstance=isinstance, reversed=reversed, divmod=divmod, iter=iter, next=next,
        pow=pow, ValueError=ValueError, getattr=guarded_getattr, hasattr=guarded_hasattr,
        __import__=restricted_import,
    )
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
