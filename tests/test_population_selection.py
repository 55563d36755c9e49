"""Parent selection over per-instance scores (epsilon-lexicase) and the run's best chosen on
validation (issue 17)."""
import numpy as np
import pytest

from population import Candidate, Islands, Store


def _member(store, islands, fitness, per_instance, island=0, source=None):
    metrics = {name: {"mean_e2e_s": value} for name, value in per_instance.items()}
    tag = len(store)          # a distinct program each (comments do not count for dedup)
    c = Candidate(source=source or f"def route(q, r, n, k):\n    return [{tag}]\n",
                  island=island, fitness=fitness, status="ok", metrics=metrics)
    islands.insert(c)
    return c


def test_lexicase_selects_specialists_a_tournament_never_picks(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    islands = Islands(store, 1, 8, rng=0, tournament_size=8, selection="lexicase",
                      metric="mean_e2e_s")
    generalist = _member(store, islands, 1.2, {"a#0": 10.0, "b#0": 10.0, "c#0": 10.0})
    spec_a = _member(store, islands, 1.1, {"a#0": 2.0, "b#0": 20.0, "c#0": 20.0})
    spec_b = _member(store, islands, 1.1, {"a#0": 20.0, "b#0": 2.0, "c#0": 20.0})
    picks = [islands.select_parent(0).id for _ in range(300)]
    counts = {c.id: picks.count(c.id) for c in (generalist, spec_a, spec_b)}
    # each specialist is the best on one instance: chosen whenever its instance comes first
    assert counts[spec_a.id] > 50 and counts[spec_b.id] > 50, counts
    tournament = Islands(store, 1, 8, rng=0, tournament_size=8)
    assert {tournament.select_parent(0).id for _ in range(20)} == {generalist.id}
    store.close()


def _six_members(path):
    """One lexicase island of 6 members with per-instance scores drawn from a fixed rng."""
    store = Store(path)
    islands = Islands(store, 1, 8, rng=7, selection="lexicase", metric="mean_e2e_s")
    rng = np.random.default_rng(1)
    for i in range(6):
        _member(store, islands, 1.0 + i / 10, {f"x#{j}": float(rng.uniform(1, 9))
                                               for j in range(4)})
    return store, islands


def test_lexicase_is_a_deterministic_function_of_the_stored_rng_state(tmp_path):
    store, islands = _six_members(tmp_path / "s.sqlite")
    first = [islands.select_parent(0).id for _ in range(5)]
    # a resumed run opens the islands again from the store: the sequence goes on
    again = Islands(store, 1, 8, rng=7, selection="lexicase", metric="mean_e2e_s")
    rest = [again.select_parent(0).id for _ in range(5)]
    store.close()
    store2, fresh = _six_members(tmp_path / "t.sqlite")
    assert [fresh.select_parent(0).id for _ in range(10)] == first + rest
    store2.close()


def test_lexicase_falls_back_to_the_tournament_without_per_instance_scores(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    islands = Islands(store, 1, 8, rng=0, tournament_size=8, selection="lexicase",
                      metric="mean_e2e_s")
    a = _member(store, islands, 1.5, {"only#0": 3.0})
    _member(store, islands, 1.0, {"only#0": 1.0})
    assert islands.select_parent(0).id == a.id       # one instance: fitness decides
    assert Islands.from_store(store).selection == "lexicase"
    with pytest.raises(ValueError):
        Islands(store, 1, 8, selection="lexicase")    # needs a metric
    with pytest.raises(ValueError):
        Islands(store, 1, 8, selection="roulette", metric="m")
    store.close()


def test_contenders_are_distinct_programs_fittest_first(tmp_path):
    from glia_evo.validation import contenders
    store = Store(tmp_path / "s.sqlite")
    islands = Islands(store, 2, 8, rng=0)
    a = _member(store, islands, 1.3, {"a#0": 1.0}, island=0)
    twin = _member(store, islands, 1.3, {"a#0": 1.0}, island=1, source=a.source)
    b = _member(store, islands, 1.2, {"a#0": 1.0})
    c = _member(store, islands, 1.25, {"a#0": 1.0}, island=1)
    islands.insert(Candidate(source=c.source, knobs={"k": 2}, island=1, fitness=1.1,
                             status="ok", operator="tune"))   # same code, other knobs
    migrants = islands.migrate(2)
    assert migrants                                 # copies are never contenders
    got = [x.id for x in contenders(store, 5)]
    assert got[:3] == [a.id, c.id, b.id] and twin.id not in got and len(got) == 4
    assert [x.id for x in contenders(store, 2)] == [a.id, c.id]
    store.close()


BINPACK = "examples/binpack/binpack_problem/__init__.py:PROBLEM"


def test_the_best_is_chosen_on_validation_and_every_reader_says_so(tmp_path):
    import glia_evo
    from glia_evo import validation
    run = glia_evo.search({"name": "bp", "problem": BINPACK, "seed": 1,
                           "search": {"islands": 2, "island_capacity": 4, "validate_top": 4},
                           "evaluation": {"workers": 2, "cascade": False},
                           "tuning": {"enabled": False}, "tracking": {"enabled": False},
                           "report": {"at_end": False}},
                          out=str(tmp_path / "bp"), max_evaluations=20)
    store = Store(run.path / "state.sqlite", create=False)
    choice = validation.current(store)
    assert choice is not None and choice["split"] == "validation"
    scores = choice["scores"]
    assert len(choice["contenders"]) == 4
    assert choice["best"] == max(choice["contenders"],
                                 key=lambda i: (scores[i]["fitness"],
                                                -choice["contenders"].index(i)))
    best = store.get(choice["best"])
    store.close()
    text = (run.path / "best.py").read_text()
    assert text.startswith(f"# glia-evo: the run's best, {best.id}, chosen on the 'validation'")
    assert text.endswith("\n" + best.source)
    assert run.status()["best"]["id"] == best.id
    report = run.report(baselines=False)
    assert report["best"]["id"] == best.id and report["best"]["chosen_on"] == "validation"
    assert "chosen on the 'validation' split" in (run.path / "report" / "heldout.md").read_text()
    exported = run.export(tmp_path / "policy.py")
    assert best.source.strip().splitlines()[-1] in exported.read_text()


def test_a_resume_chooses_again_reusing_the_scores_it_has(tmp_path, monkeypatch):
    import glia_evo
    from glia_evo import validation
    from glia_evo.evaluation import parallel
    cfg = {"name": "bp", "problem": BINPACK, "seed": 2,
           "search": {"islands": 2, "island_capacity": 4, "validate_top": 3},
           "evaluation": {"workers": 2, "cascade": False}, "tuning": {"enabled": False},
           "tracking": {"enabled": False}, "report": {"at_end": False}}
    run = glia_evo.search(cfg, out=str(tmp_path / "bp"), max_evaluations=12)
    store = Store(run.path / "state.sqlite", create=False)
    first = validation.current(store)
    store.close()
    assert first["evaluations"] == 12
    scored = []
    real = parallel.evaluate_many

    def counting(sources, *a, **kw):
        scored.extend(sources)
        return real(sources, *a, **kw)
    monkeypatch.setattr(parallel, "evaluate_many", counting)
    glia_evo.resume(run.path, max_evaluations=24)
    store = Store(run.path / "state.sqlite", create=False)
    second = validation.current(store)
    sources = {c.id: c.source for c in store.all()}
    store.close()
    assert second["evaluations"] == 24
    kept = set(first["contenders"]) & set(second["contenders"])
    for cid in kept:          # already scored: not simulated again, same score
        assert second["scores"][cid] == first["scores"][cid]
    new = [cid for cid in second["contenders"] if cid not in first["scores"]]
    assert sorted(scored) == sorted(sources[c] for c in new)
