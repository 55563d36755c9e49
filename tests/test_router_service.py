"""examples/router_service (issue 15): an exported policy served over HTTP (FastAPI) on
loopback routes a replayed trace; the service imports only the exported module."""
import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cli_helpers import run_glia as glia, small_run_toml

EXAMPLE = Path(__file__).parent.parent / "examples" / "router_service"
TRACE = Path(__file__).parent.parent / "examples" / "custom_trace" / "chat_trace.csv"


def _module(name):
    spec = importlib.util.spec_from_file_location(f"router_service_{name}",
                                                  EXAMPLE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[f"router_service_{name}"] = mod
    spec.loader.exec_module(mod)
    return mod


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_replayed_trace_routed_through_the_service(tmp_path):
    pytest.importorskip("fastapi", reason="the example service needs FastAPI")
    pytest.importorskip("uvicorn", reason="the example service needs uvicorn")
    cfg = tmp_path / "r.toml"
    cfg.write_text(small_run_toml("svc", 3))
    run = tmp_path / "run"
    assert glia("run", str(cfg), "--out", str(run), "--quiet").returncode == 0
    policy = tmp_path / "policy.py"
    assert glia("export", str(run), "--out", str(policy)).returncode == 0

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # -I: the service runs without glia-evo on its path, only the exported module
    service = subprocess.Popen([sys.executable, "-I", str(EXAMPLE / "service.py"), "--policy",
                                str(policy), "--port", str(port)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert service.poll() is None, service.stderr.read()
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                    health = json.loads(resp.read())
                break
            except OSError:
                assert time.monotonic() < deadline, "the service did not start"
                time.sleep(0.2)
        assert health["ok"] and "glia-evo policy" in health["policy"]

        replay = _module("replay")
        result = replay.replay(url, replay.read_trace(str(TRACE), limit=300), replicas=4)
        assert result["requests"] == 300 and result["calls"] == 300
        assert result["routed"] + result["still_waiting"] == 300 and result["routed"] > 250
        assert set(result["per_replica"]) == {0, 1, 2, 3}
        assert sum(result["per_replica"].values()) == result["routed"]
        assert sum(1 for n in result["per_replica"].values() if n) >= 2    # spread over replicas

        status, body = _post(url + "/route", {"now": 1.0, "queue": [
            {"id": "a", "arrival_time": 0.5, "prompt_tokens": 10}], "replicas": [
            {"id": 0, "state": "starting", "num_blocks": 10, "block_size": 16}]})
        assert status == 200 and body == {"decisions": [], "waiting": ["a"]}   # none ready
        status, body = _post(url + "/route", {"now": 1.0, "queue": [{"id": "a"}],
                                              "replicas": [{"id": 0}], "knobs": {"zz": 1}})
        assert status == 422 and "unknown knob" in body["detail"]
    finally:
        service.terminate()
        service.wait(timeout=20)
