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
replicas = [R(id=i, state="ready", num_pending=i, num_active=2 * i, free_blocks=100 - i,
              used_blocks=i, num_blocks=100, block_size=16, pending=[], active=[])
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
    assert "lineage" in text and "seed" in text and best.source.strip() in text

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
