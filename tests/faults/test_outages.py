"""Outages of the services a run talks to: the LLM endpoint (a scripted OpenAI-compatible
server on 127.0.0.1 that goes away mid-run, or is down for good) and the MLflow tracking server
(unreachable for a whole run, then back). Each run ends cleanly, every evaluation is counted
once, and nothing finished is lost (the tracking backlog is logged when the server returns)."""
from cli_helpers import run_glia as glia
from llm_server import GoAway, Reply, Status
import llm_scripts
from test_llm_run import candidates, events, run, server  # noqa: F401  (server: a fixture)
from test_tracking import Server, check_store_matches_mlflow, config as tracking_config, free_port


def test_endpoint_going_away_mid_run_and_coming_back(tmp_path, server):
    server.script("researcher", [lambda req: Reply(llm_scripts.child_answer(req)),
                                 GoAway(1.5)])
    proc, out = run(tmp_path, server, evals=6, extra="analyst = false")
    assert proc.returncode == 0, proc.stderr
    cands, meta = candidates(out)
    assert meta["evaluations"] == 6 and not [c for c in cands if c.status == "pending"]
    assert server.outages, "the server never went away"
    began, back = server.outages[0]
    assert any(r["t"] > back for r in server.requests)          # it was used again
    retries = events(out, "llm_retry")
    assert any("refused" in e["error"] for e in retries)
    assert meta["llm"]["unavailable"] == 0                      # retries bridged the outage
    assert all(c.operator in ("seed", "llm") for c in cands)


def test_endpoint_down_for_good_falls_back_to_offline_and_rule_based_summaries(tmp_path,
                                                                              server):
    server.default("researcher", lambda req: Status(503))
    server.default("analyst", lambda req: Status(500))
    proc, out = run(tmp_path, server, evals=5, retries=1, extra="concurrency = 1")
    assert proc.returncode == 0, proc.stderr
    cands, meta = candidates(out)
    assert meta["evaluations"] == 5
    children = [c for c in cands if c.operator != "seed"]
    assert children and all(c.extra.get("llm_fallback") and c.model is None for c in children)
    usage = meta["llm"]
    assert usage["unavailable"] == usage["fallbacks"] == len(children) and usage["children"] == 0
    assert usage["tokens"] == 0 and usage["calls"] == 0             # nothing was answered
    assert all(c.reasoning and not c.reasoning.startswith("ANALYST") for c in cands)
    assert usage["summary_failures"] == len(server.by_role("analyst")) // 2 >= 1
    assert len(events(out, "llm_error")) == len(children)


def test_unreachable_tracking_server_is_caught_up_after_it_returns(tmp_path):
    port = free_port()
    cfg = tmp_path / "trk.toml"
    cfg.write_text(tracking_config(6))
    run = tmp_path / "run"
    proc = glia("run", str(cfg), "--out", str(run), "--quiet", "--tracking-uri",
                f"http://127.0.0.1:{port}")
    assert proc.returncode == 0, proc.stderr
    backlog = list((run / "tracking_backlog").glob("*.json"))
    assert backlog, "records should wait in the backlog while the server is down"

    store_dir = tmp_path / "server"
    store_dir.mkdir()
    server = Server(store_dir, port)
    try:
        proc = glia("resume", str(run), "--quiet", "--max-evaluations", "8")
        assert proc.returncode == 0, proc.stderr
        assert not list((run / "tracking_backlog").glob("*.json"))
        check_store_matches_mlflow(run, server.runs())
    finally:
        server.stop()
