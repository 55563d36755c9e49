"""Routing building blocks for the offline mutator: structural changes no constant tweak reaches.

Generic AST operators only reshuffle what a program already contains; starting from
`round_robin` they can never invent "send to the least loaded replica" or "hold requests while
memory is short". These operators insert such blocks, with their numbers as tunable knobs:

- `rechoose`: replace the replica chosen in a `(request.id, replica)` pair by the ready replica
  with the lowest weighted score of its load attributes;
- `hold_guard`: in the loop that dispatches the queue, stop dispatching while the cluster's free
  KV blocks (net of what this call already sent) are below a fraction;
- `sort_queue`: serve the queue in order of a request attribute (e.g. shortest prompt first).
"""
from __future__ import annotations

import ast
import random

from .ast_edits import Mutation, add_knob

SCORE_TERMS = [  # (expression over replica `r`, typical weight)
    ("r.num_pending", 1.0), ("r.num_active", 1.0), ("r.used_blocks / r.num_blocks", 10.0),
    ("-r.free_blocks / r.num_blocks", 10.0), ("r.num_pending + r.num_active", 1.0),
]
QUEUE_KEYS = ["q.prompt_tokens", "q.arrival_time", "q.prompt_tokens + 0.0 * q.arrival_time",
              "-q.restarts"]


def _route(tree: ast.Module) -> ast.FunctionDef:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "route":
            return node
    raise Mutation("no route()")


def _pairs(fn: ast.FunctionDef) -> list[ast.Tuple]:
    """(request.id, replica) tuples: the places where the program picks a replica."""
    return [n for n in ast.walk(fn) if isinstance(n, ast.Tuple) and len(n.elts) == 2
            and isinstance(n.elts[0], ast.Attribute) and n.elts[0].attr == "id"]


def _expr(text: str) -> ast.expr:
    return ast.parse(text, mode="eval").body


def rechoose(tree, rng: random.Random, other=None) -> str:
    fn = _route(tree)
    pairs = _pairs(fn)
    if not pairs:
        raise Mutation("no (request, replica) pair")
    pair = rng.choice(pairs)
    terms = rng.sample(SCORE_TERMS, rng.choice([1, 2]))
    parts = []
    for expr, weight in terms:
        name = add_knob(tree, "s", weight, 0.0, 4 * weight)
        parts.append(f"knobs[{name!r}] * ({expr})")
    score = " + ".join(parts)
    choice = _expr(f"min([r for r in replicas if r.state == 'ready'], "
                   f"key=lambda r: ({score}, r.id)).id")
    pair.elts[1] = choice
    return f"send each request to the ready replica minimising {score}"


def _dispatch_loop(fn: ast.FunctionDef) -> ast.For:
    loops = [n for n in ast.walk(fn) if isinstance(n, ast.For)
             and any(isinstance(p, ast.Tuple) for p in ast.walk(n)) and _pairs(n)]
    if not loops:
        raise Mutation("no dispatch loop")
    return loops[0]


def hold_guard(tree, rng, other=None) -> str:
    fn = _route(tree)
    loop = _dispatch_loop(fn)
    if not isinstance(loop.target, ast.Name):
        raise Mutation("complex loop target")
    var = loop.target.id
    frac = rng.choice([0.05, 0.1, 0.2])
    name = add_knob(tree, "hold", frac, 0.0, 0.6)
    grow = add_knob(tree, "grow", 1.0, 0.0, 3.0)
    # blocks promised by this call so far are tracked in a local counter
    counter = f"_sent_{name}".lstrip("_")
    init = ast.parse(f"{counter} = 0").body[0]
    guard = ast.parse(
        f"if sum(r.free_blocks for r in replicas) - {counter} - knobs[{grow!r}] * "
        f"{var}.prompt_tokens / 16 < knobs[{name!r}] * sum(r.num_blocks for r in replicas):\n"
        f"    break").body[0]
    bump = ast.parse(f"{counter} = {counter} + {var}.prompt_tokens / 16").body[0]
    index = fn.body.index(loop) if loop in fn.body else None
    if index is None:
        raise Mutation("dispatch loop is nested")
    fn.body.insert(index, init)
    loop.body.insert(0, guard)
    loop.body.append(bump)
    return (f"hold requests in the queue while the cluster's free KV blocks would fall below "
            f"{frac:.0%} (knobs {name}, {grow})")


def sort_queue(tree, rng, other=None) -> str:
    fn = _route(tree)
    loop = _dispatch_loop(fn)
    it = loop.iter
    if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "sorted":
        raise Mutation("already sorted")
    key = rng.choice(QUEUE_KEYS)
    loop.iter = _expr(f"sorted({ast.unparse(it)}, key=lambda q: ({key}, q.id))")
    return f"serve the queue in order of {key}"


def unroll_comprehension(tree, rng, other=None) -> str:
    """`return [(a, b) for v in it]` -> an explicit loop, so guards and ordering can be added."""
    fn = _route(tree)
    for i, stmt in enumerate(fn.body):
        if (isinstance(stmt, ast.Return) and isinstance(stmt.value, ast.ListComp)
                and len(stmt.value.generators) == 1 and _pairs(stmt.value)):
            comp = stmt.value
            gen = comp.generators[0]
            name = "out"
            while any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(fn)):
                name += "_"
            body = [ast.Expr(ast.Call(ast.Attribute(ast.Name(name, ast.Load()), "append",
                                                    ast.Load()), [comp.elt], []))]
            for cond in reversed(gen.ifs):
                body = [ast.If(cond, body, [])]
            loop = ast.For(gen.target, gen.iter, body, [])
            fn.body[i:i + 1] = [ast.parse(f"{name} = []").body[0], loop,
                                ast.parse(f"return {name}").body[0]]
            return "rewrote the dispatch comprehension as an explicit loop"
    raise Mutation("no dispatch comprehension")


ROUTING_OPERATORS = {"rechoose": rechoose, "hold_guard": hold_guard, "sort_queue": sort_queue,
                     "unroll_comprehension": unroll_comprehension}
ROUTING_WEIGHTS = {"rechoose": 2, "hold_guard": 2, "sort_queue": 1, "unroll_comprehension": 1}
