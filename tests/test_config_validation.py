"""Value mistakes are caught before anything is written (issue 15): one line on stderr naming the
key (or flag, or variable) and what is allowed, exit status 2, no traceback, no run folder; the
corrected config then runs, and `resume` of a folder holding a bad config is one line too."""
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import tomli_w

from cli_helpers import SMALL_RUN, run_glia as glia, small_run_toml
from glia_evo.config import (MAX_ISLANDS, RANGES, ConfigError, check_environment, from_dict,
                             load)


def one_line_error(proc, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def small(**sections) -> dict:
    data = {"name": "v", "budget": {"max_evaluations": 2}}
    for section, values in {**SMALL_RUN, **sections}.items():
        data[section] = {**SMALL_RUN.get(section, {}), **values}
    return data


# (a section override, the key the error names, a fragment of what is allowed)
BAD_CONFIGS = [
    ({"search": {"seeds": ["llqq"]}}, "'search.seeds'", "did you mean 'llq'"),
    ({"search": {"seeds": ["no_such_file.py"]}}, "'search.seeds'", "not found"),
    ({"evaluation": {"split": "trian"}}, "'evaluation.split'", "did you mean 'train'"),
    ({"evaluation": {"cascade": True, "cascade_split": "quik"}}, "'evaluation.cascade_split'",
     "quick"),
    ({"report": {"split": "tset"}}, "'report.split'", "test"),
    ({"tuning": {"split": "nope"}}, "'tuning.split'", "train"),
    ({"search": {"islands": 2**63 - 1}}, "'search.islands'", f"from 1 to {MAX_ISLANDS}"),
    ({"search": {"islands": 100000}}, "'search.islands'", f"from 1 to {MAX_ISLANDS}"),
    ({"search": {"island_capacity": 10**12}}, "'search.island_capacity'", "integer from 2"),
    ({"evaluation": {"workers": 10**9}}, "'evaluation.workers'", "from 1 to 1024"),
    ({"evaluation": {"timeout_s": math.inf}}, "'evaluation.timeout_s'", "from 0.1 to 86400"),
    ({"evaluation": {"timeout_s": math.nan}}, "'evaluation.timeout_s'", "from 0.1 to 86400"),
    ({"search": {"islnds": 4}}, "unknown key 'search.islnds'", "did you mean 'islands'"),
    ({"evaluation": {"memory_mb": 2**62}}, "'evaluation.memory_mb'", "MiB"),
    ({"budget": {"minutes": math.inf}}, "'budget.minutes'", "<= 525600"),
    ({"budget": {"max_evaluations": 10**15}}, "'budget.max_evaluations'", "integer from 1"),
    ({"budget": {"max_cost_usd": -math.inf}}, "'budget.max_cost_usd'", "no limit"),
    ({"llm": {"timeout_s": 1e300}}, "'llm.timeout_s'", "seconds"),
    ({"llm": {"temperature": math.nan}}, "'llm.temperature'", "not sent"),
    ({"llm": {"mode": "openai", "models": {"m": math.inf}}}, "'llm.models'", "> 0"),
    ({"llm": {"base_url": "localhost:8000"}}, "'llm.base_url'", "http://"),
    ({"tuning": {"trials": 10**9}}, "'tuning.trials'", "integer from 2"),
    ({"evaluation": {"executor": "kubernetes"}}, "'evaluation.executor'", "'dask'"),
    ({"evaluation": {"workers": 1000}}, "'evaluation.workers'", "per core on this machine"),
    ({"evaluation": {"timeout_s": 1e-300}}, "'evaluation.timeout_s'", "from 0.1"),
    ({"evaluation": {"cascade_timeout_s": 1e-9}}, "'evaluation.cascade_timeout_s'", "0.1 s"),
    ({"search": {"seeds": ["llq", "llq"]}}, "'search.seeds'", "twice"),
    ({"search": {"seeds": "llq"}}, "'search.seeds'", "list of strings"),
    ({"search": {"islands": "4"}}, "'search.islands'", "integer"),
    ({"search": {"islands": 4.5}}, "'search.islands'", "integer"),
    ({"search": {"migration_k": 50, "island_capacity": 4}}, "'search.migration_k'",
     "island_capacity"),
    ({"llm": {"prices": {"m": [math.inf, 1.0]}}}, "'llm.prices'", "from 0 to 1e6"),
    ({"llm": {"models": {" ": 1.0}}}, "'llm.models'", "printable"),
    ({"llm": {"prompts_dir": "/no/such/folder"}}, "'llm.prompts_dir'", "existing folder"),
    ({"tracking": {"uri": "garbage://x y"}}, "'tracking.uri'", "sqlite:///PATH"),
    ({"tracking": {"uri": "gopher://host"}}, "'tracking.uri'", "http(s)://"),
    ({"evaluation": {"executor": "dask", "scheduler": "tcp://host with spaces"}},
     "'evaluation.scheduler'", "tcp://HOST:8786"),
]


@pytest.mark.parametrize("section, key, allowed", BAD_CONFIGS,
                         ids=[f"{k}-{i}" for i, (_, k, _) in enumerate(BAD_CONFIGS)])
def test_a_bad_value_names_its_key_and_what_is_allowed(section, key, allowed):
    with pytest.raises(ConfigError) as err:
        from_dict(small(**section))
    text = str(err.value)
    assert text.startswith(key) and allowed in text and "\n" not in text
    assert err.value.key == key.split("'")[1]


@pytest.mark.parametrize("top, key", [
    ({"seed": 2**40}, "'seed'"), ({"seed": -1}, "'seed'"), ({"name": "../escape"}, "'name'"),
    ({"problem": "rooting"}, "'problem'"), ({"problem": ""}, "'problem'"),
])
def test_bad_top_level_values(top, key):
    with pytest.raises(ConfigError, match=key):
        from_dict({**small(), **top})


@pytest.mark.parametrize("uri", ["", "sqlite:////tmp/x/mlflow.db", "http://127.0.0.1:5000",
                                 "file:///tmp/mlruns", "postgresql+psycopg2://u@h/db",
                                 "databricks", "mlruns", "/tmp/mlruns"])
def test_good_tracking_uris(uri):
    assert from_dict(small(tracking={"uri": uri})).tracking.uri == uri


def test_every_number_has_a_finite_range():
    for key, rng in RANGES.items():
        assert math.isfinite(rng.high) and not rng.ok(math.inf) and not rng.ok(math.nan), key
        assert not rng.ok(rng.high * 2 + 1), key


def test_seed_files_and_default_seeds(tmp_path, monkeypatch):
    seed = tmp_path / "mine.py"
    seed.write_text("def route(queue, replicas, now, knobs):\n    return []\n")
    monkeypatch.chdir(tmp_path)
    cfg = from_dict(small(search={"seeds": ["mine.py", "llq"]}))
    assert cfg.search.seeds == [str(seed), "llq"]        # absolute: found from anywhere
    huge = tmp_path / "huge.py"
    huge.write_text("#" * 2_000_000)
    with pytest.raises(ConfigError, match="'search.seeds'"):
        from_dict(small(search={"seeds": ["huge.py"]}))


def test_a_problem_without_seeds_in_the_config_gets_its_own():
    from glia_evo.problems import get_problem
    problem = get_problem("scheduling")
    assert from_dict({"problem": "scheduling"}).search.seeds == problem.seeds()


def test_a_problem_that_exits_or_a_folder_as_config_is_one_line(tmp_path):
    (tmp_path / "exits.py").write_text("import sys\nsys.exit(3)\n")
    proc = glia("run", "--problem", f"{tmp_path / 'exits.py'}:P", "--out", str(tmp_path / "r"))
    one_line_error(proc, "'problem'", "sys.exit(3)")
    one_line_error(glia("run", str(tmp_path), "--out", str(tmp_path / "r")), "is a folder")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("env, fragment", [
    ({"GLIA_EVO_EVAL_TIMEOUT_S": "inf"}, "GLIA_EVO_EVAL_TIMEOUT_S must be a positive number of "
                                         "seconds up to 86400, got 'inf'"),
    ({"GLIA_EVO_EVAL_TIMEOUT_S": "nan"}, "GLIA_EVO_EVAL_TIMEOUT_S must be a positive number"),
    ({"GLIA_EVO_EVAL_MEMORY_MB": "1e30"}, "GLIA_EVO_EVAL_MEMORY_MB must be a positive number of "
                                          "MiB"),
    ({"GLIA_EVO_EVAL_CPU_S": "-3"}, "GLIA_EVO_EVAL_CPU_S"),
    ({"GLIA_EVO_DASK_CONNECT_TIMEOUT_S": "1e999"}, "GLIA_EVO_DASK_CONNECT_TIMEOUT_S"),
    ({"GLIA_EVO_EVAL_TIMEOUT_S": "1e-300"}, "GLIA_EVO_EVAL_TIMEOUT_S must be at least 0.1"),
])
def test_environment_overrides_are_checked(env, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        check_environment(env)
    check_environment({"GLIA_EVO_EVAL_TIMEOUT_S": "30", "GLIA_EVO_EVAL_MEMORY_MB": ""})


def test_an_override_under_a_value_that_is_not_a_table(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('budget = 3\n')
    with pytest.raises(ConfigError, match="'budget' must be a table"):
        load(path, {"budget.minutes": 1.0})


# --- the command line: one line, exit 2, nothing written -------------------------------------------
CLI_CASES = [
    ({"search": {"seeds": ["llqq"]}}, {}, "'search.seeds'"),
    ({"evaluation": {"split": "trian"}}, {}, "'evaluation.split'"),
    ({"search": {"islands": 2**63 - 1}}, {}, "'search.islands'"),
    ({"evaluation": {"timeout_s": math.inf}}, {}, "'evaluation.timeout_s'"),
    ({}, {"GLIA_EVO_EVAL_TIMEOUT_S": "inf"}, "GLIA_EVO_EVAL_TIMEOUT_S"),
]


@pytest.mark.parametrize("section, env, key", CLI_CASES,
                         ids=[k.strip("'") for _, _, k in CLI_CASES])
def test_run_refuses_a_bad_config_and_writes_nothing(tmp_path, section, env, key):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(tomli_w.dumps(small(**section)))
    out = tmp_path / "run"
    t0 = time.monotonic()
    proc = glia("run", str(cfg), "--out", str(out), "--quiet", timeout=60,
                env={**os.environ, **env})
    assert time.monotonic() - t0 < 30
    one_line_error(proc, "glia-evo: error: ", key)
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["bad.toml"]


def test_the_corrected_config_then_runs_and_resume_of_a_bad_config_is_one_line(tmp_path):
    cfg = tmp_path / "c.toml"
    out = tmp_path / "run"
    cfg.write_text(small_run_toml("v", 2, search={"seeds": ["llqq"]}))
    one_line_error(glia("run", str(cfg), "--out", str(out), "--quiet"), "'search.seeds'")
    cfg.write_text(small_run_toml("v", 2))
    proc = glia("run", str(cfg), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "stopped: evaluation budget of 2 reached" in proc.stdout
    # a run folder whose config was broken afterwards (by hand, or by an older glia-evo)
    text = (out / "config.toml").read_text().replace('split = "quick"', 'split = "quik"', 1)
    (out / "config.toml").write_text(text)
    for command in (["resume", str(out)], ["status", str(out)], ["export", str(out), "--out",
                                                                  str(tmp_path / "p.py")]):
        one_line_error(glia(*command), "'evaluation.split'", "did you mean 'quick'")
    assert not (tmp_path / "p.py").exists()


@pytest.mark.parametrize("args, fragment", [
    (["simulate", "--policy", "llq", "--rate-scale", "1e-300"], "--rate-scale: must be from"),
    (["simulate", "--policy", "llq", "--rate-scale", "inf"], "--rate-scale: must be a finite"),
    (["simulate", "--policy", "llq", "--replicas", "99999999999"], "--replicas: must be an "
                                                                   "integer from 1 to"),
    (["simulate", "--policy", "llq", "--workers", "1" + "0" * 40], "--workers: not an integer"),
    (["run", "--minutes", "nan"], "--minutes: must be a finite number"),
    (["run", "--minutes", "1e300"], "--minutes: must be > 0 and <= 525600"),
    (["run", "--max-evaluations", "100000000000"], "--max-evaluations: must be an integer"),
    (["run", "--seed", "18446744073709551616"], "--seed: must be an integer from 0"),
    (["run", "--max-cost", "inf"], "--max-cost: must be a finite number"),
    (["ui", ".", "--port", "99999"], "--port: must be an integer from 1 to 65535"),
    (["ui", ".", "--port", "0"], "--port: must be an integer from 1 to 65535"),
])
def test_overflow_prone_command_line_values_are_one_line(tmp_path, args, fragment):
    t0 = time.monotonic()
    proc = glia(*args, timeout=60, cwd=tmp_path)
    assert time.monotonic() - t0 < 20            # at once, not after a minute
    one_line_error(proc, fragment)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("where, fragment", [
    ("/proc/glia-evo-test-run", "virtual file system"),
    ("FILE/run", "is a file, not a folder"),
])
def test_an_impossible_run_folder_is_one_line(tmp_path, where, fragment):
    (tmp_path / "FILE").write_text("x")
    out = where.replace("FILE", str(tmp_path / "FILE"))
    proc = glia("run", "--out", out, "--quiet", "--no-tracking", "--max-evaluations", "2")
    line = one_line_error(proc, fragment)
    assert "MiB free" not in line


def test_version():
    proc = glia("--version")
    assert proc.returncode == 0 and proc.stdout.strip().startswith("glia-evo 0.")


def test_sigterm_with_the_most_islands_stops_promptly(tmp_path):
    cfg = tmp_path / "big.toml"
    cfg.write_text(small_run_toml("big", 10**6, search={
        "islands": MAX_ISLANDS, "seeds": ["llq", "round_robin", "least_kv", "lor", "random",
                                          "hra", "expert", "power_of_two"]}))
    proc = subprocess.Popen([sys.executable, "-m", "glia_evo.cli", "run", str(cfg), "--out",
                             str(tmp_path / "run"), "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 15, err
    assert proc.returncode == 0, err
    assert "stopped: terminated" in out and "Traceback" not in err


TRACE_HEADER = "arrived_at,num_prefill_tokens,num_decode_tokens\n"


@pytest.mark.parametrize("rows, args, fragment", [
    ("0,10,10\n1e300,10,10\n", [], "its arrivals span 1e+300 s"),
    ("0,10,10\n1,1e300,10\n", [], "a request has 1e+300 tokens"),
    ("0,10,10\n2000000,10,10\n", ["--rate-scale", "0.001"], "after --rate-scale 0.001"),
])
def test_a_trace_with_values_too_large_to_simulate_is_one_line(tmp_path, rows, args, fragment):
    trace = tmp_path / "t.csv"
    trace.write_text(TRACE_HEADER + rows)
    proc = glia("simulate", "--policy", "llq", "--trace", str(trace), *args, timeout=60)
    one_line_error(proc, fragment)


def test_a_huge_trace_is_refused_before_it_is_parsed(tmp_path, monkeypatch, capsys):
    from glia_evo import cli
    monkeypatch.setattr(cli, "MAX_TRACE_REQUESTS", 50)
    trace = tmp_path / "t.csv"
    trace.write_text(TRACE_HEADER + "".join(f"{i},10,10\n" for i in range(51)))

    def never(*a, **kw):
        raise AssertionError("the trace was parsed")
    monkeypatch.setattr(cli, "load_trace", never)
    assert cli.main(["simulate", "--policy", "llq", "--trace", str(trace)]) == 2
    err = capsys.readouterr().err
    assert "has more than 50 requests, the most a --trace replays" in err


def test_docs_cli_md_lists_every_key_variable_and_command():
    from dataclasses import fields
    from pathlib import Path
    from glia_evo.cli import build_parser
    from glia_evo.config import ENVIRONMENT, RunConfig
    text = (Path(__file__).parent.parent / "docs" / "cli.md").read_text()

    def keys(obj, prefix=""):
        for f in fields(obj):
            value = getattr(obj, f.name)
            if hasattr(value, "__dataclass_fields__"):
                yield from keys(value, f"{prefix}{f.name}.")
            else:
                yield prefix + f.name
    missing = [k for k in keys(RunConfig()) if f"`{k}`" not in text]
    assert not missing, f"docs/cli.md does not describe {missing}"
    assert all(f"`{name}`" in text for name in ENVIRONMENT)
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert all(f"glia-evo {name}" in text for name in sub.choices)
