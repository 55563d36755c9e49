"""Running the glia-evo command line from tests, in a separate process, as a user does."""
import subprocess
import sys


def run_glia(*args, timeout: float = 900, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "glia_evo.cli", *args], capture_output=True,
                          text=True, timeout=timeout, **kw)


SMALL_RUN = {
    "search": {"islands": 2, "island_capacity": 4, "seeds": ["llq", "round_robin"],
               "validate_top": 0},
    "evaluation": {"workers": 2, "split": "quick", "cascade": False},
    "tuning": {"enabled": False},
    "tracking": {"enabled": False},
    "report": {"at_end": False},
}


def small_run_toml(name: str, evaluations: int, seed: int = 0, **sections: dict) -> str:
    """The config.toml of a small, quick test run: two islands of 4 seeded with llq and
    round_robin, 2 workers on the quick split without the cascade; tuning, tracking, the
    choice of the best on validation and the report at the end off, so each test turns on only what it tests. `sections` (e.g.
    `tuning={"enabled": True, "trials": 2}`) are merged key by key over these defaults."""
    import tomli_w
    config = {"name": name, "seed": seed, "budget": {"max_evaluations": evaluations}}
    for section in {**SMALL_RUN, **sections}:
        config[section] = {**config.get(section, {}), **SMALL_RUN.get(section, {}),
                           **sections.get(section, {})}
    return tomli_w.dumps(config)


def start_run(cfg, out, *args, capture: bool = True, new_session: bool = True
              ) -> subprocess.Popen:
    """`glia-evo run CFG --out OUT --quiet ARGS` in the background, in its own process group
    (as a shell starts it) unless `new_session=False`; output piped as text, or discarded."""
    output = (dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) if capture
              else dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return subprocess.Popen([sys.executable, "-m", "glia_evo.cli", "run", str(cfg), "--out",
                             str(out), "--quiet", *args], start_new_session=new_session, **output)
