"""The offline mutator: AST-level mutations and crossovers, no LLM needed.

Operators a genetic-programming engineer expects: perturb a constant, promote a constant to a
knob, swap a comparison or min/max, substitute one view attribute for another of the same kind,
add a weighted term, wrap an expression, and crossover of functions or key expressions between two
parents. A child is kept only if it passes the sandbox's static check (nothing is executed here);
otherwise another mutation is tried.
"""
from __future__ import annotations

import ast
import copy
import math
import random

from sandbox import PolicyCompileError
from sandbox.compile import check_source

from . import Proposal
from .ast_edits import (Mutation, add_knob, ensure_import, ensure_knobs, function_nodes,
                        functions, knob_names, knob_ref, knobs_dict, numeric_constants,
                        replace_node)

# View attributes that can stand in for each other (same kind, same units).
ATTRIBUTE_GROUPS = [
    ("num_pending", "num_active"),
    ("free_blocks", "used_blocks", "num_blocks"),
    ("prompt_tokens", "processed_tokens", "generated_tokens"),
]
GROUP_OF = {a: g for g in ATTRIBUTE_GROUPS for a in g}
COMPARE_SWAPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt}
WEIGHTS = {"perturb_constant": 3, "promote_constant": 2, "swap_comparison": 1,
           "substitute_attribute": 2, "add_weighted_term": 2, "wrap_expression": 1,
           "crossover": 2, "rule_crossover": 2}


def _numeric_attributes(tree: ast.Module, with_knobs: bool = False) -> list[ast.Attribute]:
    return [node for _, node in function_nodes(tree, with_knobs)
            if isinstance(node, ast.Attribute) and node.attr in GROUP_OF
            and isinstance(node.ctx, ast.Load)]


# --- the operators ---------------------------------------------------------------------------

def perturb_constant(tree, rng: random.Random, other=None) -> str:
    consts = numeric_constants(tree)
    if not consts:
        raise Mutation("no constants")
    node = rng.choice(consts)
    old = node.value
    if isinstance(old, int):
        new = old + rng.choice([-2, -1, 1, 2]) if abs(old) < 4 else round(old * rng.choice([0.5, 0.75, 1.5, 2]))
    else:
        new = round(old * math.exp(rng.gauss(0, 0.5)), 6) if old else rng.choice([-0.1, 0.1])
    if new == old:
        raise Mutation("unchanged")
    node.value = new
    return f"perturbed the constant {old!r} -> {new!r} on line {node.lineno}"


def promote_constant(tree, rng, other=None) -> str:
    consts = [c for c in numeric_constants(tree, with_knobs=True)]
    if not consts:
        raise Mutation("no constants in a function with knobs")
    node = rng.choice(consts)
    v = node.value
    if isinstance(v, int):
        low, high = (min(0, 4 * v), max(4, 4 * v)) if v else (-4, 4)
    elif v > 0:
        low, high = round(v / 4, 6), round(v * 4, 6)
    elif v < 0:
        low, high = round(v * 4, 6), round(v / 4, 6)
    else:
        low, high = -1.0, 1.0
    name = add_knob(tree, "k", v, low, high)
    replace_node(tree, node, knob_ref(name))
    return f"made the constant {v!r} on line {node.lineno} a tunable knob '{name}' in [{low}, {high}]"


def swap_comparison(tree, rng, other=None) -> str:
    sites = []
    for _, node in function_nodes(tree):
        if isinstance(node, ast.Compare):
            sites += [("cmp", node, i) for i, op in enumerate(node.ops) if type(op) in COMPARE_SWAPS]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("min", "max"):
            sites.append(("minmax", node, None))
    if not sites:
        raise Mutation("no comparisons")
    kind, node, i = rng.choice(sites)
    if kind == "minmax":
        old = node.func.id
        node.func.id = "max" if old == "min" else "min"
        return f"swapped {old} for {node.func.id} on line {node.lineno}"
    old = type(node.ops[i])
    new = COMPARE_SWAPS[old] if rng.random() < 0.5 else {ast.Lt: ast.Gt, ast.LtE: ast.GtE,
                                                         ast.Gt: ast.Lt, ast.GtE: ast.LtE}[old]
    node.ops[i] = new()
    return f"changed comparison {old.__name__} -> {new.__name__} on line {node.lineno}"


def substitute_attribute(tree, rng, other=None) -> str:
    attrs = _numeric_attributes(tree)
    if not attrs:
        raise Mutation("no view attributes")
    node = rng.choice(attrs)
    choices = [a for a in GROUP_OF[node.attr] if a != node.attr]
    old, node.attr = node.attr, rng.choice(choices)
    return f"used {node.attr} instead of {old} on line {node.lineno}"


def add_weighted_term(tree, rng, other=None) -> str:
    attrs = _numeric_attributes(tree, with_knobs=True)
    if not attrs:
        raise Mutation("no view attributes in a function with knobs")
    node = rng.choice(attrs)
    partner = rng.choice([a for a in GROUP_OF[node.attr] if a != node.attr])
    weight = rng.choice([-0.5, -0.25, 0.25, 0.5])
    name = add_knob(tree, "w", weight, -2.0, 2.0)
    term = ast.BinOp(knob_ref(name), ast.Mult(),
                     ast.Attribute(copy.deepcopy(node.value), partner, ast.Load()))
    replace_node(tree, node, ast.BinOp(copy.deepcopy(node), ast.Add(), term))
    return (f"added a weighted term {name}*{partner} to {node.attr} on line {node.lineno} "
            f"(weight {weight}, tunable)")


def wrap_expression(tree, rng, other=None) -> str:
    attrs = _numeric_attributes(tree)
    if not attrs:
        raise Mutation("no numeric expressions")
    node = rng.choice(attrs)
    kind = rng.choice(["sqrt", "log1p", "square"])
    inner = ast.Call(ast.Name("max", ast.Load()), [ast.Constant(0), copy.deepcopy(node)], [])
    if kind == "square":
        new = ast.BinOp(copy.deepcopy(node), ast.Pow(), ast.Constant(2))
    else:
        ensure_import(tree, "math")
        new = ast.Call(ast.Attribute(ast.Name("math", ast.Load()), kind, ast.Load()), [inner], [])
    replace_node(tree, node, new)
    return f"wrapped {node.attr} on line {node.lineno} in {kind}"


class _Rename(ast.NodeTransformer):
    def __init__(self, mapping):
        self.mapping = mapping

    def visit_Name(self, node):
        if node.id in self.mapping:
            node.id = self.mapping[node.id]
        return node


def crossover(tree, rng, other) -> str:
    """Take a whole function, or a sort/selection key, from the other parent."""
    if other is None:
        raise Mutation("no second parent")
    mine = {f.name: f for f in functions(tree)}
    theirs = {f.name: f for f in functions(other)}
    lambdas_a = [n for _, n in function_nodes(tree) if isinstance(n, ast.Lambda)]
    lambdas_b = [n for _, n in function_nodes(other) if isinstance(n, ast.Lambda)]
    pairs = [(a, b) for a in lambdas_a for b in lambdas_b
             if len(a.args.args) == len(b.args.args) and ast.dump(a) != ast.dump(b)]
    shared = [n for n in mine if n in theirs and ast.dump(mine[n]) != ast.dump(theirs[n])]
    if pairs and (not shared or rng.random() < 0.5):
        a, b = rng.choice(pairs)
        body = copy.deepcopy(b.body)
        mapping = {x.arg: y.arg for x, y in zip(b.args.args, a.args.args)}
        a.body = _Rename(mapping).visit(body)
        how = f"the key expression on line {a.lineno} from the other parent"
    elif shared:
        name = rng.choice(shared)
        idx = tree.body.index(mine[name])
        tree.body[idx] = copy.deepcopy(theirs[name])
        called = {n.func.id for n in ast.walk(theirs[name])
                  if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        for helper in sorted(called & (set(theirs) - set(mine))):
            tree.body.insert(idx, copy.deepcopy(theirs[helper]))
        how = f"function {name}() from the other parent"
    else:
        raise Mutation("nothing to cross")
    # bring the other parent's knobs and imports along when they are used
    their_knobs = knobs_dict(other)
    if their_knobs is not None:
        have = knob_names(tree)
        for k, v in zip(their_knobs.keys, their_knobs.values):
            if isinstance(k, ast.Constant) and k.value not in have:
                knobs = ensure_knobs(tree)
                knobs.keys.append(copy.deepcopy(k))
                knobs.values.append(copy.deepcopy(v))
    _bring_imports(tree, other)
    return f"crossover: took {how}"


def _bring_imports(tree: ast.Module, other: ast.Module) -> None:
    """The other parent's imports, into `tree` (what is carried over may use them)."""
    for n in other.body:
        if isinstance(n, ast.Import):
            for a in n.names:
                ensure_import(tree, a.name)


def _wrappers(tree: ast.Module) -> list[tuple[str, str, list]]:
    """(entry, rule, extra argument positions) for every top-level function `rule` that a
    top-level function `entry` passes a return value through: `return rule(X, a, b)` where a, b
    are entry's parameters (the shape of the building blocks' filters)."""
    tops = {f.name: f for f in functions(tree)}
    found = []
    for fn in tops.values():
        params = [a.arg for a in fn.args.args]
        for node in ast.walk(fn):
            if not (isinstance(node, ast.Return) and isinstance(node.value, ast.Call)):
                continue
            call = node.value
            if not (isinstance(call.func, ast.Name) and call.func.id in tops
                    and call.func.id != fn.name and call.args and not call.keywords):
                continue
            rest = call.args[1:]
            if all(isinstance(a, ast.Name) and a.id in params for a in rest):
                found.append((fn.name, call.func.id, [params.index(a.id) for a in rest]))
    return list(dict.fromkeys((e, r, tuple(p)) for e, r, p in found))


def rule_crossover(tree, rng, other) -> str:
    """Carry a whole decision rule between programs: a filter the other parent's entry point
    passes its answers through (e.g. an admission or hysteresis block with its knobs, state and
    helpers) is added to this program's same entry point, or replaces this program's version of
    that rule."""
    if other is None:
        raise Mutation("no second parent")
    mine = {f.name: f for f in functions(tree)}
    theirs = {f.name: f for f in functions(other)}
    options = [(e, r, p) for e, r, p in _wrappers(other) if e in mine
               and (r not in mine or ast.dump(mine[r]) != ast.dump(theirs[r]))]
    if not options:
        raise Mutation("no rule to carry")
    entry, rule, positions = rng.choice(options)
    params = [a.arg for a in mine[entry].args.args]
    if max(positions, default=-1) >= len(params):
        raise Mutation("the entry points differ")
    state = [n for n in other.body if isinstance(n, ast.Assign)
             and any(isinstance(t, ast.Name) and t.id.startswith(rule) for t in n.targets)]
    called = {n.func.id for n in ast.walk(theirs[rule])
              if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    helpers = [theirs[h] for h in sorted(called & set(theirs)) if h not in mine and h != rule]
    new = [copy.deepcopy(n) for n in state + helpers + [theirs[rule]]]
    if rule in mine:
        at = tree.body.index(mine[rule])
        tree.body[at:at + 1] = new[-1:]
        for n in reversed(new[:-1]):
            if not any(isinstance(m, ast.Assign) and ast.dump(m.targets) == ast.dump(n.targets)
                       for m in tree.body):
                tree.body.insert(at, n)
        how = "replaced"
    else:
        at = tree.body.index(mine[entry])
        tree.body[at:at] = new
        wrapped = 0
        for node in ast.walk(mine[entry]):
            if isinstance(node, ast.Return) and node.value is not None:
                node.value = ast.Call(ast.Name(rule, ast.Load()),
                                      [node.value] + [ast.Name(params[i], ast.Load())
                                                      for i in positions], [])
                wrapped += 1
        if not wrapped:
            raise Mutation("the entry point returns nothing")
        how = "added"
    used = {n.slice.value for n in ast.walk(ast.Module(body=new, type_ignores=[]))
            if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name)
            and n.value.id == "knobs" and isinstance(n.slice, ast.Constant)}
    their_knobs = knobs_dict(other)
    if their_knobs is not None and used:
        knobs = ensure_knobs(tree)
        for k, v in zip(their_knobs.keys, their_knobs.values):
            if isinstance(k, ast.Constant) and k.value in used:
                keys = [x.value for x in knobs.keys if isinstance(x, ast.Constant)]
                if k.value in keys:
                    knobs.values[keys.index(k.value)] = copy.deepcopy(v)
                else:
                    knobs.keys.append(copy.deepcopy(k))
                    knobs.values.append(copy.deepcopy(v))
    _bring_imports(tree, other)
    return f"rule crossover: {how} the other parent's rule {rule}() in {entry}()"


OPERATORS = {"perturb_constant": perturb_constant, "promote_constant": promote_constant,
             "swap_comparison": swap_comparison, "substitute_attribute": substitute_attribute,
             "add_weighted_term": add_weighted_term, "wrap_expression": wrap_expression,
             "crossover": crossover, "rule_crossover": rule_crossover}


def for_problem(problem) -> "OfflineMutator":
    """The offline mutator with the problem's building blocks (`Problem.blocks`), if any."""
    operators, weights = problem.blocks() if problem.blocks is not None else ({}, {})
    return OfflineMutator(problem.entrypoints, operators, weights)


def _prune_unused_knobs(tree: ast.Module) -> None:
    knobs = knobs_dict(tree)
    if knobs is None:
        return
    used = {n.slice.value for n in ast.walk(tree) if isinstance(n, ast.Subscript)
            and isinstance(n.value, ast.Name) and n.value.id == "knobs"
            and isinstance(n.slice, ast.Constant)}
    if any(isinstance(n, ast.Name) and n.id == "knobs" and not isinstance(p, ast.Subscript)
           for p in ast.walk(tree) for n in ast.iter_child_nodes(p)):
        return   # knobs used indirectly (e.g. knobs.get(name)): keep them all
    keep = [(k, v) for k, v in zip(knobs.keys, knobs.values)
            if isinstance(k, ast.Constant) and k.value in used]
    knobs.keys, knobs.values = [k for k, _ in keep], [v for _, v in keep]


class OfflineMutator:
    """Random AST operators; `propose` returns a statically valid child or None."""

    def __init__(self, entrypoints: tuple[str, ...], operators: dict | None = None,
                 weights: dict | None = None, attempts: int = 12):
        """`operators`/`weights` add problem-specific operators to the generic ones."""
        self.entrypoints = entrypoints
        self.operators = {**OPERATORS, **(operators or {})}
        self.weights = {**WEIGHTS, **(weights or {})}
        self.attempts = attempts

    def propose(self, parent, inspirations: list, context: dict) -> Proposal | None:
        rng = random.Random(context.get("seed", 0))
        base = ast.parse(parent.source)
        others = [ast.parse(c.source) for c in inspirations if c.source != parent.source]
        names = list(self.weights)
        for _ in range(self.attempts):
            op = rng.choices(names, weights=[self.weights[n] for n in names])[0]
            if op in ("crossover", "rule_crossover") and not others:
                continue
            tree = copy.deepcopy(base)
            try:
                what = self.operators[op](tree, rng, rng.choice(others) if others else None)
            except Mutation:
                continue
            _prune_unused_knobs(tree)
            source = ast.unparse(ast.fix_missing_locations(tree)) + "\n"
            if source == ast.unparse(base) + "\n":
                continue
            try:
                check_source(source, self.entrypoints)
            except PolicyCompileError:
                continue
            return Proposal(source=source, operator=op, rationale=what)
        return None
