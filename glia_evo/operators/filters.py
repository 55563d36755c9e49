"""Building blocks that post-process what an entry point returns: scheduling and autoscaling.

A generic AST operator only reshuffles what a program already contains; from `fcfs` it never
invents "admit while memory leaves a margin", from `threshold` never "no shrinking right after a
growth". These operators add such a block as a top-level *filter* function, with its numbers as
tunable knobs, and pass every value the entry point returns through it:
`return X` -> `return cooldown1(X, cluster, now, knobs)`. The entry point's own logic is kept
whole, so a filter is a small, explainable step that tuning can weaken or strengthen. One filter
of each kind per program.
"""
from __future__ import annotations

import ast
import random

from .ast_edits import Mutation, add_knob, functions


def _entry(tree: ast.Module, name: str, arity: int) -> tuple[ast.FunctionDef, list[str]]:
    for fn in functions(tree):
        if fn.name == name:
            params = [a.arg for a in fn.args.args]
            if len(params) != arity:
                raise Mutation(f"{name}() does not take {arity} parameters")
            return fn, params
    raise Mutation(f"no {name}()")


def _returns(fn: ast.FunctionDef) -> list[ast.Return]:
    """The `return` statements of `fn` itself (not of functions nested in it)."""
    found, todo = [], list(fn.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Return) and node.value is not None:
            found.append(node)
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda,
                                   ast.ClassDef)):
            todo.extend(ast.iter_child_nodes(node))
    return found


def add_filter(tree: ast.Module, entry: str, arity: int, stem: str, source: str,
               args: list[int]) -> str:
    """Insert filter `{stem}{i}` (from `source`, where NAME stands for its name) before `entry`
    and route every return value of `entry` through it with `entry`'s parameters at positions
    `args` (named as the program names them). Returns the filter's name."""
    fn, params = _entry(tree, entry, arity)
    if any(f.name.startswith(stem) for f in functions(tree)):
        raise Mutation(f"already has a {stem} filter")
    returns = _returns(fn)
    if not returns:
        raise Mutation(f"{entry}() returns nothing")
    name = f"{stem}1"
    block = ast.parse(source.replace("NAME", name)).body
    at = tree.body.index(fn)
    tree.body[at:at] = block
    for ret in returns:
        ret.value = ast.Call(ast.Name(name, ast.Load()),
                             [ret.value] + [ast.Name(params[i], ast.Load()) for i in args], [])
    return name


# --- autoscaling: scale(cluster, now, knobs) ------------------------------------------------------
def _scale_filter(tree, stem: str, source: str) -> str:
    return add_filter(tree, "scale", 3, stem, source, [0, 1, 2])


def cooldown(tree, rng: random.Random, other=None) -> str:
    value = rng.choice([60.0, 120.0, 300.0])
    knob = add_knob(tree, "cool", value, 0.0, 900.0)
    _scale_filter(tree, "cooldown", f"""
NAME_STATE = {{'up': -1000000000.0}}
def NAME(want, cluster, now, knobs):
    if want > cluster.num_replicas:
        NAME_STATE['up'] = now
    elif want < cluster.num_replicas and now - NAME_STATE['up'] < knobs[{knob!r}]:
        return cluster.num_replicas
    return want
""")
    return (f"no shrinking within {knob} = {value:g} s of the last growth (hysteresis against "
            f"flapping)")


def wait_boost(tree, rng, other=None) -> str:
    value = rng.choice([0.5, 1.0, 2.0, 5.0])
    knob = add_knob(tree, "wait", value, 0.0, 30.0)
    _scale_filter(tree, "wait_boost", f"""
def NAME(want, cluster, now, knobs):
    if cluster.oldest_wait_s > knobs[{knob!r}] and cluster.num_starting == 0:
        return max(want, min(cluster.max_replicas, cluster.num_replicas + 1))
    return want
""")
    return f"add a replica while a request has waited over {knob} = {value:g} s for admission"


def rate_floor(tree, rng, other=None) -> str:
    value = rng.choice([1.5, 2.5, 4.0])
    knob = add_knob(tree, "per_replica", value, 0.5, 20.0)
    _scale_filter(tree, "rate_floor", f"""
def NAME(want, cluster, now, knobs):
    need = int(cluster.arrival_rate / knobs[{knob!r}] + 0.999)
    return max(want, min(cluster.max_replicas, need))
""")
    return f"run at least one replica per {knob} = {value:g} requests/s of recent arrivals"


def slo_guard(tree, rng, other=None) -> str:
    value = rng.choice([0.0, 0.01, 0.02])
    knob = add_knob(tree, "slo_margin", value, -0.05, 0.05)
    _scale_filter(tree, "slo_guard", f"""
def NAME(want, cluster, now, knobs):
    if (cluster.recent_completed > 0 and cluster.num_starting == 0 and
            cluster.recent_slo_attainment < cluster.slo_target + knobs[{knob!r}]):
        return max(want, min(cluster.max_replicas, cluster.num_replicas + 1))
    return want
""")
    return f"add a replica while recent SLO attainment is below the target + {knob} = {value:g}"


def predictive(tree, rng, other=None) -> str:
    """Predictive scaling: forecast the arrival rate one cold start ahead from its recent trend
    (a linear fit over the last few calls) and run enough replicas for the forecast at a
    per-replica rate; never below what the program asks unless the forecast is well below."""
    per = add_knob(tree, "p_rate", rng.choice([1.5, 2.5, 4.0]), 0.3, 20.0)
    ahead = add_knob(tree, "p_ahead", rng.choice([0.5, 1.0, 2.0]), 0.0, 4.0)
    mode = add_knob(tree, "p_trust", rng.choice([0.0, 0.5, 1.0]), 0.0, 1.0)
    _scale_filter(tree, "predictive", f"""
NAME_STATE = {{'rates': [], 'times': []}}
def NAME(want, cluster, now, knobs):
    st = NAME_STATE
    st['rates'].append(cluster.arrival_rate)
    st['times'].append(now)
    if len(st['rates']) > 6:
        st['rates'].pop(0)
        st['times'].pop(0)
    n = len(st['rates'])
    slope = 0.0
    if n >= 3:
        mt = sum(st['times']) / n
        mr = sum(st['rates']) / n
        var = sum((t - mt) ** 2 for t in st['times'])
        if var > 0:
            slope = sum((t - mt) * (r - mr) for t, r in zip(st['times'], st['rates'])) / var
    horizon = knobs[{ahead!r}] * (cluster.cold_start_s + cluster.interval_s)
    forecast = max(0.0, cluster.arrival_rate + slope * horizon)
    need = int(forecast / knobs[{per!r}] + 0.999)
    need = max(cluster.min_replicas, min(cluster.max_replicas, need))
    if need >= want:
        return need
    return max(need, int(round(want - knobs[{mode!r}] * (want - need))))
""")
    return (f"predictive scaling: replicas for the arrival rate forecast {ahead} cold starts "
            f"ahead from its recent trend, at {per} requests/s per replica, trusted {mode} "
            f"when it asks for fewer")


def shrink_guard(tree, rng, other=None) -> str:
    """SLO-aware hysteresis: shrink only after the SLO has held with a margin and memory use
    stayed low for several calls in a row; grow at once."""
    margin = add_knob(tree, "g_margin", rng.choice([0.0, 0.01, 0.03]), -0.05, 0.05)
    calls = add_knob(tree, "g_calls", rng.choice([2, 3, 6]), 1, 30)
    kv = add_knob(tree, "g_kv", rng.choice([0.5, 0.7, 0.9]), 0.1, 1.0)
    _scale_filter(tree, "shrink_guard", f"""
NAME_STATE = {{'calm': 0}}
def NAME(want, cluster, now, knobs):
    ok = (cluster.recent_completed == 0 or
          cluster.recent_slo_attainment >= cluster.slo_target + knobs[{margin!r}])
    if ok and cluster.max_kv_use < knobs[{kv!r}] and cluster.oldest_wait_s < cluster.slo_ttft_s:
        NAME_STATE['calm'] = NAME_STATE['calm'] + 1
    else:
        NAME_STATE['calm'] = 0
    if want < cluster.num_replicas and NAME_STATE['calm'] < knobs[{calls!r}]:
        return cluster.num_replicas
    return want
""")
    return (f"SLO-aware hysteresis: shrink only after {calls} calls in a row with SLO attainment "
            f"above target + {margin}, max KV use below {kv} and no request waiting past the "
            f"TTFT SLO")


AUTOSCALING_OPERATORS = {"cooldown": cooldown, "wait_boost": wait_boost,
                         "rate_floor": rate_floor, "slo_guard": slo_guard,
                         "predictive": predictive, "shrink_guard": shrink_guard}
AUTOSCALING_WEIGHTS = {"cooldown": 1, "wait_boost": 1, "rate_floor": 1, "slo_guard": 1,
                       "predictive": 2, "shrink_guard": 2}


# --- scheduling: schedule(pending, active, replica, now, knobs) -----------------------------------
ORDER_KEYS = [  # (key over request `q`, what it means, knob (stem, value, low, high) or None)
    ("q.prompt_tokens + q.generated_tokens - knobs[K] * (now - q.arrival_time)",
     "the smallest prefill, aged by K tokens per second waited", ("age", 50.0, 0.0, 1000.0)),
    ("q.prompt_tokens + q.generated_tokens", "the smallest prefill first", None),
    ("-q.restarts", "restarted requests first", None),
]


def reorder(tree, rng, other=None) -> str:
    key, meaning, spec = rng.choice(ORDER_KEYS)
    if spec is not None:
        knob = add_knob(tree, *spec)
        key, meaning = key.replace("K", repr(knob)), meaning.replace("K", f"{knob} = {spec[1]:g}")
    key = key.replace("q.", "by_id[rid].")
    add_filter(tree, "schedule", 5, "reorder", f"""
def NAME(ids, pending, now, knobs):
    by_id = {{q.id: q for q in pending}}
    return sorted([rid for rid in ids if rid in by_id], key=lambda rid: ({key}, rid))
""", [0, 3, 4])
    return f"admit in order of {meaning}"


def admit_margin(tree, rng, other=None) -> str:
    value = rng.choice([0.02, 0.05, 0.1])
    knob = add_knob(tree, "margin", value, 0.0, 0.2)   # 0.3 doubled fcfs's mean latency
    add_filter(tree, "schedule", 5, "admit_margin", f"""
def NAME(ids, pending, active, replica, knobs):
    by_id = {{q.id: q for q in pending}}
    room = replica.free_blocks - knobs[{knob!r}] * replica.num_blocks
    out = []
    for rid in ids:
        q = by_id.get(rid)
        need = (q.prompt_tokens + q.generated_tokens) / replica.block_size if q else 0
        if need > room and (out or active):
            break
        room = room - need
        out.append(rid)
    return out
""", [0, 1, 2, 4])
    return (f"admit only while a share {knob} = {value:g} of the replica's KV blocks stays "
            f"free for growing outputs")


def admit_projected(tree, rng, other=None) -> str:
    """Admission by projected memory headroom: besides each admitted prompt, reserve blocks for
    the outputs the running and the admitted requests will still grow (a number of tokens per
    request), and keep a share of the blocks free."""
    margin = add_knob(tree, "pmargin", rng.choice([0.0, 0.02, 0.05]), 0.0, 0.2)
    grow = add_knob(tree, "pgrow", rng.choice([16.0, 64.0, 128.0]), 0.0, 1024.0)
    add_filter(tree, "schedule", 5, "admit_projected", f"""
def NAME(ids, pending, active, replica, knobs):
    by_id = {{q.id: q for q in pending}}
    bs = replica.block_size
    room = (replica.free_blocks - knobs[{margin!r}] * replica.num_blocks
            - len(active) * knobs[{grow!r}] / bs)
    out = []
    for rid in ids:
        q = by_id.get(rid)
        need = (q.prompt_tokens + q.generated_tokens + knobs[{grow!r}]) / bs if q else 0
        if need > room and (out or active):
            break
        room = room - need
        out.append(rid)
    return out
""", [0, 1, 2, 4])
    return (f"admit only while the blocks left after the prompts and {grow} tokens of output "
            f"growth per running and admitted request stay above a share {margin}")


SCHEDULING_OPERATORS = {"reorder": reorder, "admit_margin": admit_margin,
                        "admit_projected": admit_projected}
SCHEDULING_WEIGHTS = {"reorder": 2, "admit_margin": 2, "admit_projected": 2}
