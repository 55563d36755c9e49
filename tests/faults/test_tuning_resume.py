"""Tuning across a SIGKILL: a killed and resumed run with tuning on ends exactly like an
uninterrupted one (same candidates, same trials with the same knobs, same tuned children).

Each test kills `glia-evo run` at an exact line (tests/faults/soak_helpers.py `killed_at`),
resumes it to the end and compares it with a run of the same configuration never killed: a
trial in flight at the kill runs again with the same knobs in its place among the pending
candidates; a trial asked but not yet recorded in the state is run as the last in flight; a
candidate whose sensitivity probe was cut by the kill is probed again before anything else.
"""
import pytest

from population import Store
from glia_evo.events import read_events
from soak_helpers import Soak, killed_at, repro_config, state_of

KILLS = {
    "trial_in_flight": """
        from glia_evo import tuning_runs
        from glia_evo.evaluation import evaluator
        _orig = evaluator.Evaluator.submit
        def submit(self, item, job):
            _orig(self, item, job)
            if isinstance(item, tuning_runs.Trial) and item.number == 1:
                die()            # trial 1 and a candidate in flight
        evaluator.Evaluator.submit = submit
    """,
    "trial_asked_not_recorded": """
        from glia_evo import tuning
        _orig = tuning.Tuner.ask
        def ask(self):
            number, values = _orig(self)
            if number == 2:      # in the journal (RUNNING), not yet in the state
                die()
            return number, values
        tuning.Tuner.ask = ask
    """,
    "probe_cut": """
        from glia_evo import trials
        _orig = trials.Trials.probe
        def probe(self, cand, knob_sets):
            die()                # the candidate is stored; its tuning check is not done
        trials.Trials.probe = probe
    """,
}


@pytest.fixture(scope="module")
def seed_file(tmp_path_factory):
    """A mis-tuned hra (a study of it improves: a tune child), one path for every run (the
    path is in the seed's reasoning)."""
    from sim.policies import baseline_source
    from glia_evo.tuning import with_knob_values
    path = tmp_path_factory.mktemp("seed") / "mis_tuned_hra.py"
    path.write_text(with_knob_values(baseline_source("routing", "hra"),
                                     {"headroom": 2.0, "min_free": 0.2}))
    return path


def _config(seed_file):
    return dict(evaluations=24, tuning=True, seed=0, seeds=[str(seed_file), "llq"])


def outcome(run_dir):
    """Everything that defines the search's outcome: candidates, island members, the trials
    (in order, with their knobs and results) and the tuning counters that do not measure time."""
    store = Store(run_dir / "state.sqlite", create=False)
    try:
        cands = [(c.id, c.source, c.island, c.operator, tuple(c.parents), c.status,
                  round(c.fitness, 12), c.reasoning) for c in store.all()]
        members = {i: [m.id for m in store.members(i)] for i in range(2)}
        stats = {k: v for k, v in (store.get_meta("tuning_stats") or {}).items()
                 if "seconds" not in k}
        trials = store.get_meta("trials")
    finally:
        store.close()
    events = [(e["candidate"], e["trial"], e["knobs"], e["status"], e["fitness"])
              for e in read_events(run_dir / "events.jsonl") if e["event"] == "trial"]
    return cands, members, stats, trials, events


@pytest.fixture(scope="module")
def straight(tmp_path_factory, seed_file):
    from cli_helpers import run_glia as glia
    root = tmp_path_factory.mktemp("straight")
    cfg = repro_config(root, **_config(seed_file))
    out = root / "run"
    proc = glia("run", str(cfg), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    result = outcome(out)
    assert result[3] >= 2 and any(c[3] == "tune" for c in result[0]), \
        "the configuration must tune (trials and a tune child) for the kills to mean anything"
    return result


@pytest.mark.parametrize("kill", sorted(KILLS))
def test_run_killed_during_tuning_resumes_exactly_like_an_uninterrupted_one(tmp_path, kill,
                                                                            straight, seed_file):
    config = _config(seed_file)
    out = killed_at(tmp_path, KILLS[kill], **config)
    Soak.inspect(out, config["evaluations"]).check_journal(state_of(out))
    resumed = outcome(out)
    for part, a, b in zip(("candidates", "members", "tuning stats", "trials", "trial events"),
                          resumed, straight):
        assert a == b, f"{part} differ after a kill at {kill}"
