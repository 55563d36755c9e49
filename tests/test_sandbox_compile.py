"""compile_policy: what a candidate may and may not do, and how refusals are reported."""

import pickle
import textwrap
from types import SimpleNamespace

import pytest

from sandbox import ALLOWED_IMPORTS, CompiledPolicy, PolicyCompileError, compile_policy, policy_traceback
from sandbox.guards import restricted_import

ROUTE = """\
def route(queue, replicas, now, knobs):
    return [(r.id, 0) for r in queue]
"""


def policy(body: str, **kwargs) -> CompiledPolicy:
    """Compile `body` as the body of route(queue, replicas, now, knobs)."""
    src = "def route(queue, replicas, now, knobs):\n" + textwrap.indent(textwrap.dedent(body), "    ")
    return compile_policy(src, ["route"], **kwargs)


def call(compiled: CompiledPolicy, queue=(), replicas=()):
    return compiled.entrypoints["route"](list(queue), list(replicas), 0.0, compiled.knobs)


def refusal(source: str, entrypoints=("route",), **kwargs) -> PolicyCompileError:
    with pytest.raises(PolicyCompileError) as info:
        compile_policy(source, entrypoints, **kwargs)
    return info.value


def requests(n):
    return [SimpleNamespace(id=i, prompt_tokens=10 * (n - i), arrival_time=float(i)) for i in range(n)]


def replicas(n):
    return [SimpleNamespace(id=i, pending=[None] * i, active=[], free_blocks=100, num_blocks=100) for i in range(n)]


# --- valid programs -----------------------------------------------------------------------------

def test_valid_routing_policy_compiles_and_runs():
    compiled = compile_policy(ROUTE, ["route"])
    assert isinstance(compiled, CompiledPolicy)
    assert compiled.source == ROUTE
    assert set(compiled.entrypoints) == {"route"}
    assert compiled.knob_spec == {} and compiled.knobs == {}
    assert call(compiled, requests(3), replicas(2)) == [(0, 0), (1, 0), (2, 0)]


def test_single_entrypoint_name_as_str_is_accepted():
    assert set(compile_policy(ROUTE, "route").entrypoints) == {"route"}


def test_realistic_policy_with_allowed_imports_containers_and_classes():
    src = textwrap.dedent("""\
        import math, heapq
        from collections import defaultdict, deque, Counter

        KNOBS = {"headroom": (0.6, 0.0, 2.0), "cap": (3, 1, 10)}

        class Tally:
            def __init__(self):
                self.total = 0

            def add(self, v):
                self.total = self.total + v

        def route(queue, replicas, now, knobs):
            load = defaultdict(int)
            for r in replicas:
                load[r.id] += len(r.pending)
            tally = Tally()
            heap = []
            for req in queue:
                heapq.heappush(heap, (req.prompt_tokens, req.id))
            out = []
            while heap:
                tokens, rid = heapq.heappop(heap)
                best = min(replicas, key=lambda r: (load[r.id], r.id))
                load[best.id] += math.ceil(tokens * (1 + knobs["headroom"]) / 100)
                tally.add(1)
                out.append((rid, best.id))
            counts = Counter(b for _, b in out)
            recent = deque(maxlen=2)
            recent.append(tally.total)
            return out
        """)
    compiled = compile_policy(src, ["route"])
    assert call(compiled, requests(3), replicas(2)) == [(2, 0), (1, 0), (0, 1)]  # ties go to the lower id


def test_builtins_policies_need_are_present_and_range_is_not_capped():
    compiled = policy("""\
        pairs = sorted(zip([3, 1, 2], "abc"))
        return (len(list(range(5000))), pairs[0], sum(map(abs, [-1, 2])), round(1.26, 1),
                divmod(7, 2), any(filter(None, [0, 1])), next(reversed([1, 2])), isinstance(1, int),
                dict(enumerate("ab")), frozenset({1}) | set([2]), tuple([1]), float("1.5"), int(bool(1)))
        """)
    assert call(compiled) == (5000, (1, "b"), 3, 1.3, (3, 1), True, 2, True, {0: "a", 1: "b"},
                              frozenset({1, 2}), (1,), 1.5, 1)


def test_item_augmented_assignment_is_supported():
    compiled = policy("""\
        d = {"k": 1, "l": [1]}
        d["k"] += 2
        d["l"] += [2]
        n = 1
        n *= 5
        return d, n
        """)
    assert call(compiled) == ({"k": 3, "l": [1, 2]}, 5)


def test_print_is_collected_not_written(capsys):
    compiled = policy("""\
        print("hello", 1)
        return printed
        """)
    assert call(compiled) == "hello 1\n"
    assert capsys.readouterr().out == ""


# --- KNOBS ---------------------------------------------------------------------------------------

def test_knobs_are_parsed_into_spec_and_current_values():
    src = 'KNOBS = {"headroom": (0.6, 0.0, 2.0), "slots": (4, 1, 8)}\n' + ROUTE
    compiled = compile_policy(src, ["route"])
    assert compiled.knob_spec == {"headroom": (0.6, 0.0, 2.0), "slots": (4, 1, 8)}
    assert compiled.knobs == {"headroom": 0.6, "slots": 4}
    assert type(compiled.knobs["slots"]) is int  # an int knob stays usable in range()


@pytest.mark.parametrize("knobs, name, why", [
    ('{"a": 0.5}', "a", "tuple"),
    ('{"a": (0.5, 0.0)}', "a", "tuple"),
    ('{"a": (0.5, 1.0, 0.0)}', "a", "low 1.0 > high 0.0"),
    ('{"a": (3.0, 0.0, 2.0)}', "a", "outside [0.0, 2.0]"),
    ('{"a": (True, False, True)}', "a", "bool"),
    ('{"a": (1, 0, True)}', "a", "bool"),
    ('{"a": ("x", 0, 1)}', "a", "numbers"),
    ('{"a": (float("nan"), 0.0, 1.0)}', "a", "finite"),
])
def test_malformed_knob_names_the_knob_and_its_line(knobs, name, why):
    src = f'KNOBS = {{\n    "ok": (1, 0, 2),\n    {knobs[1:-1]},\n}}\n' + ROUTE
    err = refusal(src)
    assert f"knob '{name}'" in err.reason and why in err.reason
    assert err.line == 3


def test_knobs_not_a_dict():
    err = refusal("\n\nKNOBS = [(0.5, 0.0, 1.0)]\n" + ROUTE)
    assert err.line == 3 and "KNOBS must be a dict" in err.reason and "list" in err.reason


def test_knobs_key_not_a_str():
    err = refusal("KNOBS = {1: (0.5, 0.0, 1.0)}\n" + ROUTE)
    assert "KNOBS key 1 must be a str" in err.reason


# --- imports -------------------------------------------------------------------------------------

def test_forbidden_import_reports_line_and_allow_list():
    err = refusal("import math\n\nimport os\n" + ROUTE)
    assert err.line == 3
    assert str(err) == ("line 3: forbidden import 'os' (allowed: math, statistics, heapq, bisect, "
                        "itertools, functools, collections)")
    assert isinstance(err, ValueError)


@pytest.mark.parametrize("stmt, name", [
    ("from os import path", "os"),
    ("import os.path as p", "os.path"),
    ("import random", "random"),
    ("import collections.abc", "collections.abc"),    # submodules are not in the table
    ("from collections.abc import Mapping", "collections.abc"),
])
def test_forbidden_imports_in_any_form(stmt, name):
    err = refusal(ROUTE + f"    {stmt}\n")  # inside the function: found statically, never run
    assert err.line == 3 and f"forbidden import '{name}'" in err.reason


def test_foreign_module_reexported_by_an_allowed_one_is_not_in_the_table():
    err = refusal(ROUTE + "    from statistics import sys\n")
    assert err.line == 3 and err.reason.startswith("statistics.sys is not available to policies")


def test_relative_import_refused():
    assert "relative" in refusal("from . import x\n" + ROUTE).reason


def test_runtime_import_guard():
    with pytest.raises(ImportError, match="forbidden import 'os'"):
        restricted_import("os")
    with pytest.raises(ImportError, match="statistics.sys is not available to policies"):
        restricted_import("statistics", fromlist=("sys",))
    with pytest.raises(ImportError, match="forbidden import 'collections.abc'"):
        restricted_import("collections.abc")
    assert restricted_import("heapq").__name__ == "heapq"


@pytest.mark.parametrize("path", ["statistics.sys", "statistics.random", "collections.abc",
                                  "functools.recursive_repr", "functools.singledispatch"])
def test_names_outside_the_table_are_refused_statically(path):
    module, name = path.split(".")
    err = refusal(ROUTE + f"    import {module}\n    return {path}\n")
    assert err.line == 4 and err.reason.startswith(f"{path} is not available to policies")


@pytest.mark.parametrize("path", ["statistics.sys", "collections.abc", "statistics.random",
                                  "functools.recursive_repr", "functools.wraps"])
def test_names_outside_the_table_are_absent_at_run_time(path):
    module, name = path.split(".")
    compiled = policy(f"""\
        import {module}
        alias = [{module}][0]          # not statically visible as the module
        return alias.{name}
        """)
    with pytest.raises(AttributeError, match=f"{path} is not available to policies"):
        call(compiled)


def test_getattr_builtin_still_refuses_foreign_modules():
    compiled = policy("""\
        import statistics
        return getattr(statistics, "sys")
        """)
    with pytest.raises(AttributeError):
        call(compiled)


def test_allowed_imports_work():
    compiled = policy("""\
        import math, heapq, statistics, bisect, itertools, functools
        from collections import deque
        h = [3, 1, 2]
        heapq.heapify(h)
        return (math.sqrt(16), heapq.heappop(h), deque([1, 2]).popleft(), statistics.mean([1, 3]),
                bisect.bisect([1, 2, 3], 2), list(itertools.islice(itertools.count(), 2)),
                functools.reduce(lambda a, b: a * b, [2, 3]))
        """)
    assert call(compiled) == (4.0, 1, 1, 2, 2, [0, 1], 6)


# --- refused constructs --------------------------------------------------------------------------

def test_dunder_import_refused_at_compile():
    err = refusal(ROUTE + "    __import__('os')\n")
    assert err.line == 3 and "__import__" in err.reason


@pytest.mark.parametrize("expr, message", [("eval('1')", "Eval calls"), ("exec('1')", "Exec calls")])
def test_eval_and_exec_refused_at_compile(expr, message):
    err = refusal(ROUTE + f"    {expr}\n")
    assert err.line == 3 and message in err.reason


def test_open_is_not_available():
    with pytest.raises(NameError, match="open"):
        call(policy("return open('x')"))
    err = refusal("x = 1\nopen('x')\n" + ROUTE)  # at module level it is a compile error
    assert err.line == 2 and "NameError" in err.reason


@pytest.mark.parametrize("name", ["type", "globals", "vars", "compile", "random", "SystemExit"])
def test_dangerous_builtins_are_absent(name):
    with pytest.raises(NameError):
        call(policy(f"return {name}"))


def test_getattr_dunder_refused_at_run_time():
    with pytest.raises(AttributeError, match="__class__"):
        call(policy("return getattr(1, '__class__')"))
    with pytest.raises(AttributeError, match="mro"):
        call(policy("return int.mro()"))


def test_class_hierarchy_walk_refused_at_compile():
    err = refusal(ROUTE + "    return ().__class__.__bases__[0].__subclasses__()\n")
    assert err.line == 3 and "starts with" in err.reason


def test_generator_frame_refused():
    gen = """\
        def gen():
            yield 1
        g = gen()
        """
    with pytest.raises(AttributeError, match="gi_frame"):
        call(policy(gen + "return getattr(g, 'gi_' + 'frame')"))
    assert "gi_frame" in refusal(ROUTE + "    (x for x in []).gi_frame\n").reason


def test_format_attribute_walk_refused_at_run_time():
    with pytest.raises(NotImplementedError, match="format"):
        call(policy("return '{0.__class__}'.format(1)"))


def test_writing_attributes_of_passed_in_objects_is_refused():
    compiled = policy("""\
        queue[0].prompt_tokens = 0
        """)
    queue = requests(1)
    with pytest.raises(TypeError):
        call(compiled, queue)
    assert queue[0].prompt_tokens == 10
    with pytest.raises(TypeError):
        call(policy("setattr(queue[0], 'prompt_tokens', 0)"), queue)
    assert queue[0].prompt_tokens == 10


def test_missing_attribute_raises_instead_of_returning_none():
    compiled = policy("return getattr(rng, 'nope', 7), rng.nope")
    with pytest.raises(AttributeError, match="nope"):
        call(compiled)


# --- structural refusals -------------------------------------------------------------------------

def test_missing_entry_point():
    err = refusal(ROUTE, entrypoints=("route", "schedule"))
    assert err.line is None and "missing entry point 'schedule'" in err.reason
    assert "it is a int" in refusal("route = 3\n").reason  # must be a function, not any value


def test_syntax_error_has_line():
    err = refusal("x = 1\n\ndef route(queue:\n    pass\n")
    assert err.line == 3 and err.reason.startswith("syntax error")


def test_source_too_large():
    err = refusal(ROUTE + "#" * 200, max_source_bytes=100)
    assert err.line is None and "limit of 100" in err.reason


def test_too_deep_nesting():
    err = refusal(ROUTE + "    x = " + "[" * 70 + "]" * 70 + "\n")
    assert err.line == 3 and "nested too deeply" in err.reason
    compile_policy(ROUTE + "    x = " + "[" * 5 + "]" * 5 + "\n", ["route"])  # normal nesting is fine


def test_error_in_module_body_has_line():
    err = refusal("x = 1\ny = x / 0\n" + ROUTE)
    assert err.line == 2 and "ZeroDivisionError: division by zero" in err.reason


def test_compile_error_pickles_with_line():
    err = refusal("import os\n" + ROUTE)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.line, copy.reason, str(copy)) == (err.line, err.reason, str(err))


# --- randomness ----------------------------------------------------------------------------------

def test_rng_is_seeded_and_reseed_resets_it():
    body = "return [rng.random() for _ in range(3)]"
    first, second = policy(body, seed=7), policy(body, seed=7)
    draws = call(first)
    assert draws == call(second)
    assert draws != call(policy(body, seed=8))
    assert call(first) != draws  # the stream moves on ...
    first.reseed(7)
    assert call(first) == draws  # ... until reseeded


# --- tracebacks ----------------------------------------------------------------------------------

def test_policy_traceback_points_at_candidate_line():
    src = textwrap.dedent("""\
        def helper(x):
            return 1 / x

        def route(queue, replicas, now, knobs):
            return helper(0)
        """)
    compiled = compile_policy(src, ["route"])
    with pytest.raises(ZeroDivisionError) as info:
        call(compiled)
    assert policy_traceback(info.value) == ("line 2 in helper: ZeroDivisionError: division by zero", 2)


def test_policy_traceback_without_candidate_frames():
    try:
        raise KeyError("x")
    except KeyError as exc:
        assert policy_traceback(exc) == ("KeyError: 'x'", None)


def test_allowed_imports_constant_matches_design():
    assert ALLOWED_IMPORTS == ("math", "statistics", "heapq", "bisect", "itertools", "functools", "collections")


# --- the curated surface -------------------------------------------------------------------------

from pathlib import Path  # noqa: E402

from sandbox import guards  # noqa: E402
from sandbox.compile import KNOB_BOUND, clean_text  # noqa: E402


def test_surface_table_is_the_allowed_imports_plus_builtins():
    assert tuple(k for k in guards.ALLOWED_SURFACE if k != "builtins") == ALLOWED_IMPORTS
    for names in guards.ALLOWED_SURFACE.values():
        assert len(names) == len(set(names))


@pytest.mark.parametrize("module", ALLOWED_IMPORTS)
def test_every_name_in_the_table_is_present_and_usable(module):
    namespace = restricted_import(module)
    public = {k for k in vars(namespace) if not k.startswith("_")}
    assert public == set(guards.ALLOWED_SURFACE[module])      # exactly the table
    for name in guards.ALLOWED_SURFACE[module]:
        value = getattr(namespace, name)
        assert callable(value) or isinstance(value, float), (module, name)
        # and `from m import name` works, statically and at run time
        compiled = compile_policy(f"from {module} import {name}\n" + ROUTE, ["route"])
        assert compiled.namespace[name] is value


def test_builtins_are_exactly_the_table():
    names = guards.make_builtins()
    assert set(names) == set(guards.ALLOWED_SURFACE["builtins"])
    assert names["getattr"] is guards.guarded_getattr and names["setattr"] is guards.guarded_setattr
    assert names["math"] is restricted_import("math")


@pytest.mark.parametrize("name", ["string", "same_type", "test", "reorder", "whrandom", "open",
                                  "type", "object", "super", "vars", "dir", "format", "print_"])
def test_builtins_outside_the_table_are_absent(name):
    with pytest.raises(NameError):
        call(policy(f"return {name}"))


def test_the_curated_names_work_in_a_policy():
    compiled = policy("""\
        import functools, statistics, itertools, collections, heapq, bisect
        key = functools.cmp_to_key(lambda a, b: b - a)
        add = functools.partial(lambda a, b: a + b, 10)
        square = functools.lru_cache(maxsize=8)(lambda x: x * x)
        @functools.cache
        def double(x):
            return 2 * x
        @functools.total_ordering
        class Size:
            def __init__(self, n):
                self.n = n
            def __eq__(self, other):
                return self.n == other.n
            def __lt__(self, other):
                return self.n < other.n
        dist = statistics.NormalDist(0, 1)
        return (sorted([1, 3, 2], key=key), add(1), square(3), double(4), Size(2) >= Size(1),
                round(dist.cdf(0), 2), statistics.median([1, 2, 3]),
                list(itertools.pairwise([1, 2, 3])), collections.Counter("aab").most_common(1),
                heapq.nsmallest(1, [3, 1]), bisect.bisect_left([1, 2], 2), math.floor(2.5))
        """)
    assert call(compiled) == ([3, 2, 1], 11, 9, 8, True, 0.5, 2, [(1, 2), (2, 3)], [("a", 2)], [1],
                              1, 2)


@pytest.mark.parametrize("stmt, message", [
    ("from functools import singledispatch", "functools.singledispatch"),
    ("from functools import reduce, wraps", "functools.wraps"),
    ("from collections import namedtuple", "collections.namedtuple"),
    ("from collections import abc", "collections.abc"),
    ("from statistics import sys", "statistics.sys"),
    ("import functools as f\n    f.update_wrapper", "functools.update_wrapper"),
    ("import functools\n    functools.cached_property", "functools.cached_property"),
    ("import collections\n    collections.ChainMap", "collections.ChainMap"),
    ("import itertools\n    itertools.batched", "itertools.batched"),
    ("math.sumprod", "math.sumprod"),                      # the builtin math namespace
])
def test_names_outside_the_table_are_refused_with_their_line(stmt, message):
    err = refusal(ROUTE + f"    {stmt}\n")
    assert err.line == 3 + stmt.count("\n"), err
    assert err.reason.startswith(f"{message} is not available to policies (allowed: ")


def test_a_rebound_module_name_is_left_to_the_run_time_check():
    compiled = policy("""\
        import functools
        functools = {"wraps": 1}            # no longer the module: not refused statically
        return functools["wraps"]
        """)
    assert call(compiled) == 1
    math_as_arg = compile_policy("def route(queue, replicas, now, math):\n    return math.x\n",
                                 ["route"])
    assert math_as_arg.entrypoints["route"]([], [], 0.0, SimpleNamespace(x=3)) == 3


def test_runtime_messages_name_the_table():
    with pytest.raises(AttributeError, match=r"functools.wraps is not available to policies "
                                             r"\(allowed: reduce, partial"):
        call(policy("import functools\nreturn getattr(functools, 'wr' + 'aps')"))
    assert call(policy("import functools\nreturn hasattr(functools, 'wraps')")) is False
    with pytest.raises(ImportError, match="functools.wraps is not available"):
        restricted_import("functools", fromlist=("reduce", "wraps"))


def test_total_ordering_only_for_the_policys_own_classes():
    with pytest.raises(TypeError, match="classes the policy defines"):
        call(policy("import functools, collections\nfunctools.total_ordering(collections.Counter)"))


def test_setattr_and_delattr_use_the_write_guard_and_refuse_underscore_names():
    compiled = policy("""\
        class Box:
            pass
        box = Box()
        setattr(box, "x", 1)
        y = box.x
        delattr(box, "x")
        return y, hasattr(box, "x")
        """)
    assert call(compiled) == (1, False)
    with pytest.raises(AttributeError, match="_"):
        call(policy("class Box:\n    pass\nsetattr(Box(), '__class__', Box)"))
    with pytest.raises(TypeError, match="must be str"):
        call(policy("class S(str):\n    pass\nclass Box:\n    pass\nsetattr(Box(), S('x'), 1)"))
    with pytest.raises(TypeError, match="must be str"):
        call(policy("class S(str):\n    pass\nreturn getattr(1, S('real'))"))


def test_the_test_only_switch_hands_out_the_old_proxies(monkeypatch):
    monkeypatch.setattr(guards, "_CURATED", False)
    compiled = compile_policy("import functools\n" + ROUTE.replace(
        "return [(r.id, 0) for r in queue]", "return functools.singledispatch"), ["route"])
    assert call(compiled) is __import__("functools").singledispatch


def test_doc_table_is_generated_from_the_dict():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "sandbox.md").read_text()
    assert "## Language layer" in doc
    assert guards.allowed_surface_markdown() in doc, (
        "docs/sandbox.md is out of date: python3 -c 'from sandbox.guards import write_doc; "
        "write_doc()'")


# --- hygiene -------------------------------------------------------------------------------------

@pytest.mark.parametrize("entry", ["(0.0, -1e308, 1e308)", "(0.0, -1e10, 1.0)", "(2e9, 0, 3e9)",
                                   "(0, 0, 10 ** 12)"])
def test_knob_ranges_must_be_bounded(entry):
    err = refusal(f'\nKNOBS = {{"w": {entry}}}\n' + ROUTE)
    assert err.line == 2 and "knob 'w'" in err.reason and "1e+09" in err.reason
    compile_policy(f'KNOBS = {{"w": (0.0, {-KNOB_BOUND}, {KNOB_BOUND})}}\n' + ROUTE, ["route"])


def test_knobs_of_subclassed_numbers_are_refused():
    src = "class N(int):\n    pass\nKNOBS = {'w': (N(1), 0, 2)}\n" + ROUTE
    assert "must hold numbers" in refusal(src).reason


def test_a_leading_byte_order_mark_is_accepted():
    compiled = compile_policy("\ufeff" + ROUTE, ["route"])
    assert call(compiled, requests(1), replicas(1)) == [(0, 0)]
    from sandbox.compile import check_source
    assert check_source("\ufeffKNOBS = {'a': (1, 0, 2)}\n" + ROUTE, ["route"]) == {"a": (1, 0, 2)}


@pytest.mark.parametrize("raw", ["\x1b[2J", "\x07", "\r", "\x9b", "\u202e", "\u2066", "\ufeff",
                                 "\x00", "\ud800"])
def test_control_characters_in_messages_are_escaped(raw):
    with pytest.raises(ValueError) as info:
        call(policy(f"raise ValueError({('x' + raw + 'y')!r})"))
    text, _ = policy_traceback(info.value)
    assert text.isprintable() and "x" in text and "y" in text
    err = refusal(f"KNOBS = {{{('k' + raw)!r}: (5, 0, 1)}}\n" + ROUTE)
    assert str(err).isprintable()
    err = refusal(f"x = 1\nraise KeyError({('k' + raw) * 400!r})\n" + ROUTE)
    assert str(err).isprintable() and len(err.reason) <= 1500


def test_clean_text_escapes_and_bounds():
    assert clean_text("a\x1bb\x07c\u202ed") == "a\\x1bb\\x07c\\u202ed"
    assert clean_text("a\r\n\tb") == "a b"
    assert len(clean_text("\x1b" * 1000)) == 500


def test_star_import_is_refused():
    err = refusal("from functools import *\n" + ROUTE)
    assert err.line == 1 and "'from functools import *' is not allowed" in err.reason


@pytest.mark.parametrize("raw", ["\x1b", "\x07", "\u202e", "\u2066", "\x00", "\u200b"])
def test_a_source_with_a_raw_control_or_format_character_is_refused(raw):
    """Raw escapes and bidi overrides ("Trojan source") would reach files and screens as they
    are; the program must write them as escapes."""
    err = refusal(ROUTE + f'\n\n# a comment {raw} here\n')
    assert "raw control or format character" in err.reason and err.line is not None
    assert raw not in str(err)
    compile_policy(ROUTE + '\n\n# a comment with a no-break\u00a0space and an em dash \u2014\n',
                   ["route"])
