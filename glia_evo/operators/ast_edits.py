"""AST edits the offline operators share: finding a program's functions, constants and KNOBS,
adding a knob, replacing a node. Problem-specific operators (`filters`, `routing_blocks`) build
on these; nothing here knows any problem."""
from __future__ import annotations

import ast


class Mutation(Exception):
    """This mutation does not apply to this program (try another)."""


def parents_map(tree: ast.AST) -> dict:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def functions(tree: ast.Module) -> list[ast.FunctionDef]:
    return [n for n in tree.body if isinstance(n, ast.FunctionDef)]


def knobs_dict(tree: ast.Module) -> ast.Dict | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "KNOBS"
                                                for t in node.targets):
            return node.value if isinstance(node.value, ast.Dict) else None
    return None


def ensure_knobs(tree: ast.Module) -> ast.Dict:
    knobs = knobs_dict(tree)
    if knobs is None:
        knobs = ast.Dict(keys=[], values=[])
        at = sum(1 for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
                 or (isinstance(n, ast.Expr) and isinstance(getattr(n, "value", None), ast.Constant)))
        tree.body.insert(at, ast.Assign(targets=[ast.Name("KNOBS", ast.Store())], value=knobs))
    return knobs


def knob_names(tree: ast.Module) -> set[str]:
    knobs = knobs_dict(tree)
    return {k.value for k in knobs.keys if isinstance(k, ast.Constant)} if knobs else set()


def add_knob(tree: ast.Module, stem: str, value, low, high) -> str:
    names = knob_names(tree)
    i = 1
    while f"{stem}{i}" in names:
        i += 1
    name = f"{stem}{i}"
    knobs = ensure_knobs(tree)
    knobs.keys.append(ast.Constant(name))
    knobs.values.append(ast.Tuple([ast.Constant(value), ast.Constant(low), ast.Constant(high)],
                                  ast.Load()))
    return name


def ensure_import(tree: ast.Module, module: str) -> None:
    for n in tree.body:
        if isinstance(n, ast.Import) and any(a.name == module for a in n.names):
            return
    at = 1 if tree.body and isinstance(tree.body[0], ast.Expr) else 0
    tree.body.insert(at, ast.Import(names=[ast.alias(module)]))


def knob_ref(name: str) -> ast.Subscript:
    return ast.Subscript(ast.Name("knobs", ast.Load()), ast.Constant(name), ast.Load())


def function_nodes(tree: ast.Module, with_knobs: bool = False):
    """(function, node) for every node inside a top-level function body."""
    for fn in functions(tree):
        if with_knobs and "knobs" not in {a.arg for a in fn.args.args}:
            continue
        for stmt in fn.body:
            for node in ast.walk(stmt):
                yield fn, node


def numeric_constants(tree: ast.Module, with_knobs: bool = False) -> list[ast.Constant]:
    parents = parents_map(tree)
    found = []
    for _, node in function_nodes(tree, with_knobs):
        if (isinstance(node, ast.Constant) and isinstance(node.value, (int, float))
                and not isinstance(node.value, bool)):
            parent = parents.get(node)
            if isinstance(parent, ast.Subscript) and parent.slice is node:
                continue          # an index: changing it breaks the program, not the policy
            if isinstance(parent, ast.UnaryOp) and isinstance(parent.op, ast.USub):
                continue
            found.append(node)
    return found


def replace_node(tree: ast.AST, old: ast.AST, new: ast.AST) -> None:
    parent = parents_map(tree)[old]
    for name, value in ast.iter_fields(parent):
        if value is old:
            setattr(parent, name, new)
            return
        if isinstance(value, list):
            for i, item in enumerate(value):
                if item is old:
                    value[i] = new
                    return
    raise Mutation("node not found")
