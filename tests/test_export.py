"""Export the best candidate as a standalone module and reproduce its fitness exactly."""
import json
import os
import subprocess
import sys

from cli_helpers import run_glia as glia, small_run_toml
from population import Store

CONFIG = small_run_toml("exp", 8, search={"islands": 1, "seeds": ["round_robin", "llq"]},
                        tuning={"enabled": True}, tracking={"enabled": True})

STANDALONE = r"""
import importlib.util, sys, types
assert not any(m in sys.modules for m in ("glia_evo", "sim", "sandbox", "population"))
for name in ("glia_evo", "sim", "sandbox", "population"):
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{name} is importable: the test is not isolated")
spec = importlib.util.spec_from_file_location("exported", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
import random
mod.rng = random.Random(0)
knobs = {k: v[0] for k, v in getattr(mod, "KNOBS", {}).items()}
R = types.SimpleNamespace
# every attribute a policy may read from a replica view (sim/views.py ReplicaView)
replicas = [R(id=i, gpu="A10", state="ready", num_pending=i, num_active=2 * i,
              free_blocks=100 - i, used_blocks=i, num_blocks=100, block_size=16,
              chunk_size=8192, max_batch=128, pending=[], active=[])
            for i in range(3)]
queue = [R(id=7, arrival_time=0.0, prompt_tokens=50, processed_tokens=0, generated_tokens=0,
           restarts=0)]
answer = mod.route(queue, replicas, 1.0, knobs)
assert all(rid == 7 and rep in (0, 1, 2) for rid, rep in answer), answer
print("standalone ok", answer)
"""




def test_export_best_runs_standalone_and_reproduces_fitness(tmp_path):
    cfg = tmp_path / "exp.toml"
    cfg.write_text(CONFIG)
    run = tmp_path / "run"
    assert glia("run", str(cfg), "--out", str(run), "--quiet").returncode == 0
    store = Store(run / "state.sqlite", create=False)
    best = max((c for c in store.all() if c.status == "ok"), key=lambda c: c.fitness)
    store.close()

    out = tmp_path / "policy.py"
    proc = glia("export", str(run), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert text.startswith(f"# glia-evo policy {best.id}")
    from glia_evo.export import without_docstring
    assert "lineage" in text and "seed" in text and without_docstring(best.source).strip() in text
    assert "The reference baseline of the routing problem" not in text   # the seed's docstring
    assert f'"""glia-evo policy {best.id} for the routing problem' in text

    from sim.views import ReplicaView
    public = {n for n in ReplicaView.__slots__ if not n.startswith("_")} | {
        n for n, v in vars(ReplicaView).items() if isinstance(v, property)}
    assert all(f"{n}=" in STANDALONE for n in public)     # the fake replica is complete
    isolated = subprocess.run([sys.executable, "-I", "-S", "-c", STANDALONE, str(out)],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert isolated.returncode == 0, isolated.stderr
    assert "standalone ok" in isolated.stdout

    sim = glia("simulate", "--policy", str(out), "--split", "quick", "--json")
    assert sim.returncode == 0, sim.stderr
    assert json.loads(sim.stdout)["fitness"] == best.fitness     # bit for bit


def test_export_errors_are_one_line(tmp_path):
    proc = glia("export", str(tmp_path), "--out", str(tmp_path / "x.py"))
    assert proc.returncode == 2 and "not a glia-evo run folder" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_export_to_a_folder_or_an_impossible_place_is_one_line(tmp_path):
    cfg = tmp_path / "exp.toml"
    cfg.write_text(small_run_toml("exp", 2, search={"islands": 1, "seeds": ["llq"]}))
    run = tmp_path / "run"
    assert glia("run", str(cfg), "--out", str(run), "--quiet").returncode == 0
    folder = tmp_path / "existing"
    folder.mkdir()
    (tmp_path / "afile").write_text("x")
    for out, fragment in [(folder, "is a folder; give a file name"),
                          ("/proc/glia-evo-export.py", "virtual file system"),
                          (tmp_path / "afile" / "p.py", "is a file, not a folder")]:
        proc = glia("export", str(run), "--out", str(out), timeout=60)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        [line] = proc.stderr.strip().splitlines()
        assert line.startswith("glia-evo: error: ") and fragment in line, line
    assert sorted(os.listdir(tmp_path)) == ["afile", "existing", "exp.toml", "run"]
    assert os.listdir(folder) == []                       # no existing.tmp, nothing inside
    nested = tmp_path / "new" / "dir" / "p.py"             # missing folders are made
    assert glia("export", str(run), "--out", str(nested)).returncode == 0 and nested.is_file()


PLAIN = r"""
import dataclasses, importlib.util, sys
assert "glia_evo" not in sys.modules and "sim" not in sys.modules
spec = importlib.util.spec_from_file_location("policy", sys.argv[1])
policy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(policy)
kind = sys.argv[2]
if kind == "route":
    queue = [{"id": 7, "arrival_time": 0.0, "prompt_tokens": 512},
             {"id": 8, "arrival_time": 0.2, "prompt_tokens": 64}]
    replicas = [{"id": 0, "num_pending": 3, "num_active": 9, "num_blocks": 500,
                 "block_size": 32, "free_blocks": 120},
                {"id": 1, "num_blocks": 500, "block_size": 32, "pending": [], "active": [
                    {"id": 1, "arrival_time": 0.0, "prompt_tokens": 10}]}]
    answer = policy.decide(queue, replicas, 1.0)
    assert sorted(r for r, _ in answer) == [7, 8] and all(rep in (0, 1) for _, rep in answer)

    @dataclasses.dataclass
    class Replica:                      # simple dataclasses work as well as dicts
        id: int
        num_pending: int
        num_active: int
        num_blocks: int = 500
        block_size: int = 32
        state: str = "ready"
    assert policy.decide(queue, [Replica(0, 5, 5), Replica(1, 0, 0)], 1.0)
    assert policy.decide(queue, [Replica(0, 0, 0, state="starting")], 1.0) == []
    assert policy.decide(queue, [], 1.0) == []
    try:                                # no block size is assumed: it is your servers'
        policy.replica_view({"id": 3}).block_size
    except AttributeError as exc:
        assert "replica 3 has no 'block_size'" in str(exc), exc
    else:
        raise SystemExit("a block size was made up")
    assert policy.replica_view({"id": 3, "num_blocks": 10, "used_blocks": 4}).free_blocks == 6
    try:
        policy.decide(queue, replicas, 1.0, knobs={"no_such_knob": 1})
    except KeyError as exc:
        assert "unknown knob" in str(exc)
    else:
        raise SystemExit("an unknown knob was accepted")
elif kind == "schedule":
    pending = [{"id": 1, "arrival_time": 0.5, "prompt_tokens": 900},
               {"id": 2, "arrival_time": 0.1, "prompt_tokens": 20}]
    order = policy.decide(pending, [], {"id": 0, "num_blocks": 100, "block_size": 16}, 1.0)
    assert sorted(order) == [1, 2], order
    assert policy.decide([], [], {"id": 0}, 1.0) == []
else:
    cluster = dict(num_replicas=2, num_ready=2, num_starting=0, num_draining=0, min_replicas=1,
                   max_replicas=8, interval_s=10.0, cold_start_s=60.0, window_s=60.0,
                   queue_len=40, num_pending=10, num_active=30, num_waiting=40,
                   oldest_wait_s=5.0, kv_use=0.95, max_kv_use=0.99, arrival_rate=20.0,
                   arrivals=1200, completed=1000, recent_completed=100, p50_ttft_s=1.0,
                   p90_ttft_s=3.0, p99_ttft_s=5.0, p50_e2e_s=10.0, p90_e2e_s=20.0,
                   p99_e2e_s=30.0, mean_tpot_s=0.05, recent_slo_attainment=0.5,
                   slo_ttft_s=2.0, slo_tpot_s=0.1, slo_target=0.9, gpu_seconds=100.0,
                   replicas=[{"id": 0, "num_blocks": 100, "block_size": 16}])
    wanted = policy.decide(cluster, 60.0)
    assert isinstance(wanted, int) and wanted > 2, wanted     # overloaded: scale up
print("plain ok")
"""


def test_the_exported_module_works_on_plain_data(tmp_path):
    """Each problem's adapter, appended to a shipped baseline as export appends it to the best
    candidate, run by a bare Python (-I -S: no glia-evo, no simulator)."""
    from glia_evo.adapter import adapter_source, strip_adapter
    from glia_evo.problems import get_problem
    for problem, baseline in (("routing", "hra"), ("routing", "llq"),
                              ("scheduling", "shortest_prompt_first"),
                              ("autoscaling", "threshold")):
        p = get_problem(problem)
        source = p.baseline_source(baseline) if hasattr(p, "baseline_source") else \
            __import__("sim.policies", fromlist=["x"]).baseline_source(problem, baseline)
        module = tmp_path / f"{problem}_{baseline}.py"
        module.write_text(source + adapter_source(p.entrypoints))
        assert strip_adapter(module.read_text()) == source + "\n\n"
        proc = subprocess.run([sys.executable, "-I", "-S", "-c", PLAIN, str(module),
                               p.entrypoints[0]], capture_output=True, text=True, timeout=60,
                              cwd=tmp_path)
        assert proc.returncode == 0 and "plain ok" in proc.stdout, (baseline, proc.stderr)
