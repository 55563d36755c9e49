"""Packaging (issue 15): `python -m build` makes a wheel and an sdist; each installs in a fresh
virtual environment and passes a smoke test there (the installed copy, not the source tree:
the command, the package data — prompts, traces, baselines —, a simulation and a tiny search);
the metadata is complete for a PyPI release."""
import email
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "glia_evo", "sim", "sandbox", "population")

SMOKE = r"""
import json, pathlib, sys
import glia_evo, sim, sandbox, population
venv = pathlib.Path(sys.prefix).resolve()
for mod in (glia_evo, sim, sandbox, population):
    assert venv in pathlib.Path(mod.__file__).resolve().parents, (mod.__file__, venv)
from glia_evo.llm import Prompts
assert "$" in Prompts().text("researcher")
from sim import load_trace
from sim.workload import DATA_DIR
assert len(load_trace(DATA_DIR / "glia_routing" / "first_turn_seed0.csv")) > 100
from sim.policies import baseline_names
assert "llq" in baseline_names("routing") and "fcfs" in baseline_names("scheduling")
print("smoke ok")
"""


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    pytest.importorskip("build", reason="python -m build needs the `build` package "
                                        "(pip install -e '.[test]')")
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(src)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "deprecated" not in (proc.stdout + proc.stderr).lower()
    [wheel] = out.glob("*.whl")
    [sdist] = out.glob("*.tar.gz")
    return wheel, sdist


def test_the_metadata_is_complete(dist):
    wheel, _ = dist
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(z.read(name))
        files = z.namelist()
    for field in ("Name", "Version", "Summary", "Requires-Python", "Author",
                  "Description-Content-Type", "Keywords"):
        assert meta.get(field), field
    assert meta.get("License-Expression") == "MIT"
    assert meta.get_all("Classifier") and meta.get_all("Requires-Dist")
    assert meta.get_payload().lstrip().startswith("#")            # the README, as markdown
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in files)
    entry = next(n for n in files if n.endswith("entry_points.txt"))
    with zipfile.ZipFile(wheel) as z:
        assert "glia-evo = glia_evo.cli:main" in z.read(entry).decode()


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_it_installs_in_a_fresh_venv_and_works(dist, tmp_path, kind):
    artifact = dist[0] if kind == "wheel" else dist[1]
    venv = tmp_path / "venv"
    # the dependencies (numpy, mlflow...) come from this interpreter's site-packages; glia-evo
    # itself only from the artifact (--no-deps), and nothing runs from the source tree
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=300)
    py = venv / "bin" / "python"
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps",
                           "--force-reinstall", str(artifact)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}

    def run(*args, **kw):
        return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                              timeout=300, cwd=work, env=env, **kw)
    glia = venv / "bin" / "glia-evo"
    version = run(glia, "--version")
    assert version.returncode == 0 and version.stdout.strip() == "glia-evo 0.1.0"
    smoke = run(py, "-c", SMOKE)
    assert smoke.returncode == 0 and "smoke ok" in smoke.stdout, smoke.stderr[-3000:]
    sim = run(glia, "simulate", "--policy", "llq", "--split", "quick", "--json")
    assert sim.returncode == 0, sim.stderr[-2000:]
    import json
    assert json.loads(sim.stdout)["fitness"] == 1.0
    (work / "tiny.toml").write_text(
        'name = "tiny"\n[search]\nislands = 1\nseeds = ["llq"]\n[budget]\nmax_evaluations = 2\n'
        '[evaluation]\nsplit = "quick"\ncascade = false\n[tuning]\nenabled = false\n'
        '[tracking]\nenabled = false\n[report]\nat_end = false\n')
    search = run(glia, "run", "tiny.toml", "--quiet")
    assert search.returncode == 0, search.stderr[-2000:]
    assert "stopped: evaluation budget of 2 reached" in search.stdout
    assert (work / "runs" / "tiny" / "best.py").is_file()
