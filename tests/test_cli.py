"""The glia-evo command line, run as a user runs it: a separate process, exit codes, output."""
import json
import subprocess
import sys

import pytest

from sim.policies import baseline_source

CONTRACT_METRICS = {"mean_e2e_s", "p50_e2e_s", "p99_e2e_s", "mean_ttft_s", "p99_ttft_s",
                    "mean_tpot_s", "throughput_rps", "restarts", "completed", "gpu_seconds",
                    "slo_attainment"}
QUICK = ["--scenario", "glia_short", "--seed", "101", "--workers", "1"]


def cli(*args, check_rc=None):
    proc = subprocess.run([sys.executable, "-m", "glia_evo.cli", *args], capture_output=True,
                          text=True, timeout=600)
    if check_rc is not None:
        assert proc.returncode == check_rc, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def one_line_error(proc, *fragments):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    for frag in fragments:
        assert frag in lines[0], lines[0]
    return lines[0]


def test_simulate_json_schema_and_reference_fitness():
    out = json.loads(cli("simulate", "--problem", "routing", "--policy", "llq", *QUICK, "--json",
                         check_rc=0).stdout)
    assert out["problem"] == "routing" and out["policy"] == "llq"
    assert out["fitness"] == 1.0
    assert list(out["scenarios"]) == ["glia_short#101"]
    metrics = out["scenarios"]["glia_short#101"]
    assert CONTRACT_METRICS <= set(metrics)
    assert metrics["completed"] > 1000 and metrics["mean_e2e_s"] > 0


def test_policy_file_gives_same_metrics_as_baseline_name(tmp_path):
    path = tmp_path / "my_hra.py"
    path.write_text(baseline_source("routing", "hra"))
    by_file = json.loads(cli("simulate", "--policy", str(path), *QUICK, "--json", check_rc=0).stdout)
    by_name = json.loads(cli("simulate", "--policy", "hra", *QUICK, "--json", check_rc=0).stdout)
    assert by_file["scenarios"] == by_name["scenarios"]
    assert by_file["fitness"] == by_name["fitness"] > 0


def test_table_output_when_not_json():
    proc = cli("simulate", "--policy", "hra", *QUICK, check_rc=0)
    assert "glia_short#101" in proc.stdout and "mean e2e s" in proc.stdout


def test_trace_replicas_and_rate_scale(tmp_path):
    trace = tmp_path / "t.csv"
    rows = ["arrived_at,num_prefill_tokens,num_decode_tokens"]
    rows += [f"{i * 0.05:.3f},{100 + 7 * i},{50 + (i % 9) * 20}" for i in range(300)]
    trace.write_text("\n".join(rows) + "\n")
    base = ["simulate", "--policy", "llq", "--trace", str(trace), "--json"]
    plain = json.loads(cli(*base, check_rc=0).stdout)
    [(name, m)] = plain["scenarios"].items()
    assert name == "trace:t.csv#0" and m["completed"] == 300
    fewer = json.loads(cli(*base, "--replicas", "1", check_rc=0).stdout)
    faster = json.loads(cli(*base, "--rate-scale", "4", check_rc=0).stdout)
    m1 = next(iter(fewer["scenarios"].values()))
    m4 = next(iter(faster["scenarios"].values()))
    assert m1["mean_e2e_s"] > m["mean_e2e_s"]
    assert m1["gpu_seconds"] < m["gpu_seconds"]
    assert m4["throughput_rps"] > m["throughput_rps"]
    assert m4["mean_e2e_s"] > m["mean_e2e_s"]


@pytest.mark.parametrize("args, fragments", [
    (["simulate", "--problem", "nope", "--policy", "llq"], ["unknown problem 'nope'"]),
    (["simulate", "--policy", "fastest"], ["unknown routing baseline 'fastest'", "llq"]),
    (["simulate", "--policy", "llq", "--scenario", "moon"], ["unknown routing scenario 'moon'"]),
    (["simulate", "--policy", "missing_file.py"], ["policy file not found"]),
    (["simulate", "--policy", "llq", "--trace", "no/such.csv"], ["trace file not found"]),
    (["baselines", "--problem", "nope"], ["unknown problem"]),
])
def test_bad_input_is_one_clear_line(args, fragments):
    proc = cli(*args)
    assert proc.returncode == 2
    one_line_error(proc, *fragments)


def test_malformed_trace_names_the_row(tmp_path):
    trace = tmp_path / "bad.csv"
    trace.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,10,5\n0.5,ten,5\n")
    line = one_line_error(cli("simulate", "--policy", "llq", "--trace", str(trace)), "row 3")
    assert "num_prefill_tokens" in line


def test_policy_with_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("def route(queue, replicas, now, knobs):\n    return [(\n\nx = )\n")
    proc = cli("simulate", "--policy", str(path), *QUICK)
    assert proc.returncode == 1
    one_line_error(proc, "broken.py", "line")


def test_policy_returning_unknown_replica_is_invalid(tmp_path):
    path = tmp_path / "wrong.py"
    path.write_text("def route(queue, replicas, now, knobs):\n"
                    "    return [(r.id, 17) for r in queue]\n")
    proc = cli("simulate", "--policy", str(path), *QUICK)
    assert proc.returncode == 1
    one_line_error(proc, "invalid", "unknown replica id 17")


def test_policy_that_raises_reports_its_own_line(tmp_path):
    path = tmp_path / "crash.py"
    path.write_text("def route(queue, replicas, now, knobs):\n"
                    "    total = 0\n"
                    "    return [(r.id, 1 // total) for r in queue]\n")
    proc = cli("simulate", "--policy", str(path), *QUICK)
    line = one_line_error(proc, "line 3", "ZeroDivisionError")
    assert "sim/" not in line and "glia_evo" not in line


def test_baselines_json_lists_all_eight():
    out = json.loads(cli("baselines", "--problem", "routing", "--scenario", "glia_short",
                         "--json", check_rc=0).stdout)
    names = [b["policy"] for b in out["baselines"]]
    assert names == ["random", "round_robin", "lor", "llq", "least_kv", "power_of_two", "hra",
                     "expert"]
    fitness = {b["policy"]: b["fitness"] for b in out["baselines"]}
    assert fitness["llq"] == 1.0
    assert all(b["status"] == "ok" for b in out["baselines"])
