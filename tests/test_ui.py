"""`glia-evo ui` (issue 15): a taken port is one line at once, the server reached must serve this
run's store, and SIGTERM stops the MLflow server with all its processes. Loopback only."""
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from cli_helpers import run_glia as glia
from glia_evo.ui import serves_this_store, store_identity


def make_store(run_dir, experiment="glia-evo"):
    """A run folder with an MLflow store holding one experiment and one run."""
    from mlflow.tracking import MlflowClient
    run_dir.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=f"sqlite:///{(run_dir / 'mlflow.db').resolve()}")
    exp = client.create_experiment(experiment,
                                   artifact_location=(run_dir / "mlartifacts").resolve().as_uri())
    run = client.create_run(exp, run_name="c000001")
    client.set_terminated(run.info.run_id)
    return run_dir


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_line(proc):
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("ui") / "run")


@pytest.mark.parametrize("listen", [True, False], ids=["listening", "bound"])
def test_a_port_taken_by_a_plain_socket_is_one_line_at_once(store, listen):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        if listen:
            s.listen(1)           # accepts, never answers
        port = s.getsockname()[1]
        t0 = time.monotonic()
        proc = glia("ui", str(store), "--port", str(port), timeout=60)
        assert time.monotonic() - t0 < 15
        line = one_line(proc)
    assert line.startswith(f"glia-evo: error: port {port} on 127.0.0.1 cannot be used")
    assert "--port" in line


def test_a_folder_without_a_store_is_one_line(tmp_path):
    line = one_line(glia("ui", str(tmp_path), "--port", str(free_port()), timeout=60))
    assert "has no MLflow store" in line


class _Fake(http.server.BaseHTTPRequestHandler):
    answer: dict = {}

    def do_POST(self):
        self._send()

    def do_GET(self):
        self._send()

    def _send(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        key = "runs" if "/runs/get" in self.path else "experiments"
        body = json.dumps(self.answer.get(key, {})).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_the_server_reached_must_serve_this_runs_store(store, tmp_path):
    mine = store_identity(store / "mlflow.db")
    other = store_identity(make_store(tmp_path / "other") / "mlflow.db")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Fake)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        def answer(ident):
            exps = [{"experiment_id": i, "name": n, "creation_time": t,
                     "lifecycle_stage": "active"} for i, (n, t) in ident["experiments"].items()]
            run = next(iter(ident["runs"]))
            _Fake.answer = {"experiments": {"experiments": exps},
                            "runs": {"run": {"info": {"run_id": run}}}}
        answer(other)                   # another run's MLflow (same experiment name)
        assert not serves_this_store(url, mine)
        answer(mine)
        assert serves_this_store(url, mine)
    finally:
        server.shutdown()
        server.server_close()


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_two_uis_on_one_port_and_sigterm_leaves_nothing(store):
    """Starts the real MLflow server (tens of seconds on a loaded machine)."""
    port = free_port()
    first = subprocess.Popen([sys.executable, "-m", "glia_evo.cli", "ui", str(store), "--port",
                              str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    try:
        line = first.stdout.readline()            # printed once the server is verified
        assert line.startswith(f"MLflow UI for {store}: http://127.0.0.1:{port}/#/experiments/"), \
            (line, first.stderr.read() if first.poll() is not None else "")
        assert "/runs?workflowType=machine_learning&searchFilter=" in line       # candidates
        assert line.rstrip().endswith("  (Ctrl-C to stop)")
        assert first.stdout.readline().startswith("lineage page: http://127.0.0.1:")
        servers = [int(p) for p in subprocess.run(
            ["pgrep", "-f", "--", f"mlflow server .*--port {port}"], capture_output=True,
            text=True).stdout.split()]
        assert servers
        groups = {os.getpgid(p) for p in servers if _exists(p)}
        members = subprocess.run(["pgrep", "-g", ",".join(map(str, groups))],
                                 capture_output=True, text=True).stdout.split()
        assert len(members) > 1          # the server and its workers / helpers

        second = glia("ui", str(store), "--port", str(port), timeout=60)
        assert "cannot be used: something is already listening there" in one_line(second)

        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)
        assert first.returncode == 0, first.stderr.read()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_group_alive(g) for g in groups):
            time.sleep(0.2)
        assert not any(_group_alive(g) for g in groups), "MLflow processes left running"
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0      # nothing serves the port
    finally:
        if first.poll() is None:
            os.killpg(os.getpgid(first.pid), signal.SIGKILL)


def _exists(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_without_port_the_next_free_port_is_taken_and_named(monkeypatch):
    from glia_evo import ui
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        taken = s.getsockname()[1]
        monkeypatch.setattr(ui, "DEFAULT_PORT", taken)
        port, note = ui.choose_port(None)
        assert port > taken and note == f"port {taken} is in use; using port {port}"
        with pytest.raises(ui.UIError, match=f"port {taken} on 127.0.0.1 cannot be used"):
            ui.choose_port(taken)


def test_the_address_opens_the_candidates_table_of_the_runs_experiment():
    from glia_evo.ui import candidates_url, experiment_id
    ident = {"experiments": {"0": ("Default", 1), "3": ("glia-evo", 2), "4": ("other", 3)}}
    assert experiment_id(ident) == "3"
    url = candidates_url("http://127.0.0.1:5000", "3")
    assert url.startswith("http://127.0.0.1:5000/#/experiments/3/runs?workflowType="
                          "machine_learning&searchFilter=tags.%60glia.kind%60%20%3D%20%27"
                          "candidate%27&orderByKey=metrics.%60fitness%60&orderByAsc=false")


def test_lineage_nodes_link_to_their_candidates_runs():
    import re
    from glia_evo.lineage import lineage_html
    from glia_evo.tracking import run_route
    cands = [{"id": "c000001", "parents": [], "fitness": 1.0, "status": "ok", "generation": 0,
              "operator": "seed", "island": 0},
             {"id": "c000002", "parents": ["c000001"], "fitness": 1.2, "status": "ok",
              "generation": 1, "operator": "mutate", "island": 0},
             {"id": "c000003", "parents": ["c000001"], "fitness": 0.0, "status": "error",
              "generation": 1, "operator": "mutate", "island": 0}]
    links = {"c000001": run_route("1", "a" * 32), "c000002": run_route("1", "b" * 32)}
    page = lineage_html(cands, links=links)          # the logged artifact: MLflow UI routes
    nodes = dict(re.findall(r'<a class="node" data-run="(c\d+)" href="([^"]+)" '
                            r'target="_top">', page))
    assert nodes == {"c000001": f"#/experiments/1/runs/{'a' * 32}?workflowType=machine_"
                                f"learning",
                     "c000002": f"#/experiments/1/runs/{'b' * 32}?workflowType=machine_"
                                f"learning"}                  # c000003 not logged yet: no link
    assert "<script>" in page and "id='framed'" in page       # the note for MLflow's preview
    served = lineage_html(cands, links=links, base="http://127.0.0.1:5000/")
    assert f'href="http://127.0.0.1:5000/#/experiments/1/runs/{"b" * 32}?' in served
    plain = lineage_html(cands)                      # no links: the page as before, no script
    assert "<a " not in plain and "<script>" not in plain


def test_the_lineage_server_answers_its_own_address_only(tmp_path):
    """glia-evo ui's lineage page (no state file here: a one-line 500, not a traceback), and a
    request naming another host (DNS rebinding) is refused."""
    import urllib.error
    import urllib.request
    from glia_evo.ui import LineageServer
    server = LineageServer(tmp_path, "http://127.0.0.1:5000", "1").start()
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.url, timeout=10)
        assert err.value.code == 500 and b"cannot build the lineage page" in err.value.read()
        req = urllib.request.Request(server.url, headers={"Host": "evil.example:80"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 403
    finally:
        server.stop()
