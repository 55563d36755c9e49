"""The integrity layer: what a job sends back is checked and its fitness recomputed by the engine
(glia_evo/evaluation/wire.py: result_from_wire, outcome_to_result), and a would-be best that does
not reproduce its metrics in a fresh process is not believed (Evaluator.irreproducible)."""
import math
import os

import pytest

from cli_helpers import small_run_toml
from glia_evo import runner
from glia_evo.config import load as load_config
from glia_evo.evaluation import EvalResult
from glia_evo.hygiene import clean, register_secret
from glia_evo.evaluation.wire import metric_violation, outcome_to_result
from population import Store
from sandbox import JobOutcome, WorkerPool

METRICS = {"mean_e2e_s": 20.0, "p50_e2e_s": 10.0, "p90_e2e_s": 30.0, "p99_e2e_s": 60.0,
           "mean_ttft_s": 2.0, "completed": 100, "slo_attainment": 0.5}
POOL = WorkerPool.__new__(WorkerPool)          # outcome_to_result reads only memory_mb
POOL.limits = type("L", (), {"memory_mb": 512})()


def wire(**fields) -> dict:
    base = EvalResult(status="ok", fitness=1.0, scenarios={"a#0": dict(METRICS)},
                      reference={"a#0": 20.0}).to_dict()
    base.update(fields)
    return base


def read(value, **kw):
    kw = {"metric": "mean_e2e_s", "reference": {"a#0": 40.0}, "completed": {"a#0": 100},
          "expected": {"ok": ["a#0"]}, **kw}
    return outcome_to_result(JobOutcome("ok", value=value), "train", POOL, **kw)


def test_fitness_is_recomputed_from_the_trusted_reference_not_taken_from_the_job():
    forged = wire(fitness=1e9, reference={"a#0": 1e12})
    result = read(forged)
    assert result.status == "ok"
    assert result.fitness == pytest.approx(2.0)          # 40 / 20, the engine's reference
    assert result.reference == {"a#0": 40.0}


@pytest.mark.parametrize("bad, why", [
    ([1, 2], "not an object"),
    (wire(status="excellent"), "unknown status"),
    (wire(scenarios={"a#0": {**METRICS, "mean_e2e_s": float("nan")}}), "finite"),
    (wire(scenarios={"a#0": {**METRICS, "mean_e2e_s": True}}), "finite"),
    (wire(scenarios={"a#0": {**METRICS, "mean_e2e_s": -1.0}}), "negative"),
    (wire(scenarios={"a#0": {**METRICS, "p50_e2e_s": 99.0}}), "out of order"),
    (wire(scenarios={"a#0": {**METRICS, "completed": 50}}), "trace has 100"),
    (wire(scenarios={"a#0": {**METRICS, "slo_attainment": 3.0}}), "above 1"),
    (wire(scenarios={}), "cover the instances"),
    (wire(scenarios={"a#0": METRICS, "b#0": METRICS}), "cover the instances"),
    (wire(error=["x"]), "error must be a string"),
    (wire(line=-3), "line"),
    (wire(diagnostics={"x": list(range(300_000))}), "more than"),
    (wire(scenarios={"a#0": {"x" * 500: 1.0}}), "name"),
])
def test_a_malformed_or_impossible_result_is_crashed_with_the_reason(bad, why):
    result = read(bad)
    assert result.status == "crashed" and result.fitness == 0.0
    assert "invalid result" in result.error and why in result.error, result.error


def test_a_rejected_result_must_cover_the_first_stage():
    result = read(wire(status="rejected"), expected={"ok": ["b#0"], "rejected": ["a#0"]})
    assert result.status == "rejected" and result.fitness == pytest.approx(2.0)
    assert read(wire(status="ok"), expected={"ok": ["b#0"], "rejected": ["a#0"]}).status == \
        "crashed"


def test_strings_from_a_job_are_cleaned_and_secrets_redacted():
    register_secret("sk-test-wire-secret-123")
    result = read(wire(status="error", error="boom \x1b[2J sk-test-wire-secret-123 \u202e",
                       diagnostics={"note\x07": "x\x1b"}))
    assert result.status == "error"
    assert "\x1b" not in result.error and "\u202e" not in result.error
    assert "[redacted]" in result.error and "sk-test" not in result.error
    assert result.diagnostics == {"note\\x07": "x\\x1b"}
    assert len(clean("y" * 10_000)) <= 2000


def test_metric_violation_accepts_real_metrics():
    assert metric_violation(METRICS, 100) is None
    assert metric_violation({"cost": 3.0}) is None       # another problem's metrics


# --- a would-be best must reproduce in a fresh process --------------------------------------------
def _forging_job(job):
    """Stands for a candidate that escaped and forged a result that differs per process."""
    from glia_evo.evaluation.jobs import _evaluate_job
    result = _evaluate_job(job)
    if result.status == "ok" and job.cascade is False and "# forged" in job.source:
        for metrics in result.scenarios.values():
            factor = 10.0 + os.getpid() % 97
            for key in list(metrics):
                if key.endswith("_s"):
                    metrics[key] /= factor
    return result.to_dict()


def test_a_forged_best_that_does_not_reproduce_is_not_believed(tmp_path, monkeypatch):
    from glia_evo.evaluation import evaluator as evaluator_module
    from sim.policies import baseline_source
    seed_file = tmp_path / "forged.py"
    seed_file.write_text(baseline_source("routing", "llq") + "# forged\n")
    monkeypatch.setattr(evaluator_module, "evaluate_job", _forging_job)
    cfg_path = tmp_path / "cfg.toml"
    cfg_path.write_text(small_run_toml("forge", 3, search={"islands": 1, "seeds": [str(seed_file)]},
                                       tuning={"enabled": False}))
    cfg = load_config(cfg_path, {"out": str(tmp_path / "run")})
    assert runner.start(cfg, progress=False) == 0
    store = Store(tmp_path / "run" / "state.sqlite", create=False)
    try:
        cands = store.all()
    finally:
        store.close()
    seed = next(c for c in cands if c.operator == "seed")
    # the seed's source is not the shipped baseline's, so it is checked, and fails
    assert seed.status == "crashed" and "did not reproduce" in seed.error
    assert all(not (c.status == "ok" and c.fitness > 5) for c in cands)
    assert math.isfinite(seed.fitness)


# --- a kernel that refuses a layer ------------------------------------------------------------------
def test_a_weak_sandbox_is_reported_and_an_llm_run_needs_the_explicit_flag(monkeypatch, capsys,
                                                                           tmp_path):
    import sandbox.kernel as kernel
    from glia_evo.runner import RunError, check_sandbox
    weak = kernel.KernelSupport(available=("no_new_privs",), missing=("landlock", "seccomp"),
                                reason="the kernel has no Landlock")
    monkeypatch.setattr(kernel, "probe", lambda: weak)
    cfg_path = tmp_path / "cfg.toml"
    cfg_path.write_text(small_run_toml("weak", 3))
    offline = load_config(cfg_path, {})
    check_sandbox(offline)
    assert "kernel layer is incomplete" in capsys.readouterr().err
    llm = load_config(cfg_path, {"llm.mode": "openai", "llm.base_url": "http://127.0.0.1:9/v1", "llm.models": {"m": 1.0}})
    with pytest.raises(RunError, match="--allow-weak-sandbox"):
        check_sandbox(llm)
    allowed = load_config(cfg_path, {"llm.mode": "openai", "llm.base_url": "http://127.0.0.1:9/v1", "llm.models": {"m": 1.0},
                                     "evaluation.allow_weak_sandbox": True})
    check_sandbox(allowed)
    assert "warning" in capsys.readouterr().err
    monkeypatch.setattr(kernel, "probe", lambda: kernel.KernelSupport(
        available=kernel.LAYERS, missing=(), reason=""))
    check_sandbox(llm)                                   # a complete layer: nothing to say
    assert capsys.readouterr().err == ""
