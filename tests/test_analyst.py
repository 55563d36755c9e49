"""The rule-based Analyst speaks each problem's language: its evidence and its advice on a
failure come from the problem (`Problem.advice`, `Problem.valid_answer`)."""
from glia_evo.analyst import summarize
from glia_evo.evaluation import EvalResult, evaluate
from glia_evo.problems import get_problem

ROUTING, SCHEDULING, AUTOSCALING = (get_problem(n) for n in
                                    ("routing", "scheduling", "autoscaling"))


def ok(scenarios, diagnostics=None, fitness=1.0):
    return EvalResult(status="ok", fitness=fitness, scenarios=scenarios,
                      diagnostics=diagnostics or {})


def test_an_invalid_answer_is_explained_in_the_problems_terms():
    bad = EvalResult(status="invalid", error="diurnal#0: scale returned 9.5")
    texts = {p.name: summarize(bad, 1.0, None, "scale on queue", p)
             for p in (ROUTING, SCHEDULING, AUTOSCALING)}
    assert "(request_id, replica_id) pairs" in texts["routing"]
    assert "ids taken from `pending`" in texts["scheduling"]
    assert "between cluster.min_replicas and cluster.max_replicas" in texts["autoscaling"]
    for name in ("scheduling", "autoscaling"):
        assert "replica_id" not in texts[name]
    assert "description asks for" in summarize(bad, 1.0, None, "x")     # no problem: generic


def test_load_imbalance_is_routing_advice_only():
    diag = {"glia#0": {"load_imbalance_cv_mean": 0.8}}
    metrics = {"glia#0": {"mean_e2e_s": 5.0, "p99_e2e_s": 9.0, "completed": 100, "restarts": 0}}
    assert "Load imbalance" in summarize(ok(metrics, diag), None, None, "x", ROUTING)
    assert "imbalance" not in summarize(ok(metrics, diag), None, None, "x", SCHEDULING)


def test_scheduling_reports_starvation_and_a_tail_paid_for_the_mean():
    parent = {"heavy_tail#0": {"mean_e2e_s": 10.0, "p99_e2e_s": 50.0}}
    mine = {"heavy_tail#0": {"mean_e2e_s": 8.0, "p99_e2e_s": 70.0, "starved": 7,
                             "max_wait_s": 260.0, "completed": 6000, "restarts": 10}}
    text = summarize(ok(mine, fitness=1.25), 1.0, parent, "shortest prompt first", SCHEDULING)
    assert "7 requests starved" in text and "260 s on heavy_tail#0" in text
    assert "The tail paid for the mean: p99 latency worse on heavy_tail#0 +40%" in text
    assert "Latency better on heavy_tail#0 -20%" in text
    fair = {"heavy_tail#0": {"mean_e2e_s": 8.0, "p99_e2e_s": 45.0, "starved": 0,
                             "max_wait_s": 20.0, "completed": 6000, "restarts": 10}}
    text = summarize(ok(fair, fitness=1.25), 1.0, parent, "x", SCHEDULING)
    assert "starved" not in text and "tail paid" not in text


def test_autoscaling_names_slo_shortfalls_cost_and_flapping():
    short = {"step#0": {"penalized_gpu_seconds": 900.0, "gpu_seconds": 500.0,
                        "slo_attainment": 0.9, "slo_shortfall": 0.05}}
    flapping = {"step#0": {"per_replica": [
        {"started_s": 0.0, "stopped_s": None},
        {"started_s": 300.0, "stopped_s": 400.0},          # lived 100 s
        {"started_s": 500.0, "stopped_s": 1100.0}]}}       # lived 600 s
    text = summarize(ok(short, flapping, 0.6), 1.0, None, "x", AUTOSCALING)
    assert "SLO attainment below target on step#0 0.900 (target 0.95)" in text
    assert "1 replicas were stopped less than 180 s after they started" in text
    assert "Latency" not in text

    parent = {"step#0": {"penalized_gpu_seconds": 500.0, "gpu_seconds": 500.0}}
    costly = {"step#0": {"penalized_gpu_seconds": 600.0, "gpu_seconds": 600.0,
                         "slo_attainment": 0.99, "slo_shortfall": 0.0}}
    text = summarize(ok(costly, fitness=0.83), 1.0, parent, "x", AUTOSCALING)
    assert "The SLO target holds on every scenario (smallest margin +0.040)" in text
    assert "GPU cost rose on step#0 +20%" in text
    assert "penalized_gpu_seconds worse on step#0 +20%" in text
    tight = {"step#0": {**costly["step#0"], "slo_attainment": 0.955}}
    assert "savings must come from timing" in summarize(ok(tight), None, None, "x", AUTOSCALING)


def test_a_real_autoscaling_evaluation_gets_autoscaling_evidence():
    # one replica whatever the load: the metrics and diagnostics the rules read are real ones
    source = "def scale(cluster, now, knobs):\n    return cluster.min_replicas\n"
    instances = AUTOSCALING.split("quick")
    result = evaluate(source, AUTOSCALING, instances)
    assert result.status == "ok", result.error
    text = summarize(result, 1.0, None, "always the minimum", AUTOSCALING)
    assert f"SLO attainment below target on {instances[0].name}" in text, text
