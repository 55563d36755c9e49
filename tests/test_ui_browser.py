"""`glia-evo ui` in a real browser (issue 15's acceptance): headless Chromium from the
distribution's packages (Debian's `chromium`, /usr/bin/chromium), driven by Playwright for
Python, never a browser Playwright downloads. `.ci/run` installs both; the test skips, saying
why, only where Chromium is missing or cannot start.

A small finished run (offline, 6 evaluations, tracking on): the address `glia-evo ui` prints
opens the run's candidates (MLflow's runs table, model training view, every candidate listed);
its lineage page links every node to that candidate's MLflow run; a click on the best's node
reaches the candidate's run page, and a screenshot of it is saved in the run folder
(`ui_candidate.png`, with `ui_candidates.png` of the table). The browser may only reach
loopback: any other request is refused and fails the test.
"""
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from cli_helpers import run_glia as glia, small_run_toml

CHROMIUM = os.environ.get("GLIA_EVO_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser(tmp_path):
    """A Playwright context of the system's Chromium with a new, empty profile; loopback only."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed (pip install -e '.[test]')")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium "
                    f"chromium-driver; .ci/run does it where it may)")
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    with sync_api.sync_playwright() as pw:
        try:
            ctx = pw.chromium.launch_persistent_context(
                str(profile), executable_path=CHROMIUM, args=ARGS, headless=True,
                viewport={"width": 1400, "height": 900}, timeout=60_000)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            pytest.skip(f"Chromium ({CHROMIUM}) cannot start here: {first[:300]}")
        refused = []

        def loopback_only(route):
            url = route.request.url
            host = re.match(r"^[a-z]+://(\[[^\]]*\]|[^/:?#]+)", url)
            if url.startswith(("data:", "blob:", "about:")) or (
                    host and host.group(1) in LOOPBACK):
                route.continue_()
            else:
                refused.append(url)
                route.abort()
        ctx.route("**/*", loopback_only)
        ctx.refused = refused
        try:
            yield ctx
        finally:
            ctx.close()


def read_lines(proc: subprocess.Popen, n: int, timeout_s: float) -> list[str]:
    """The first `n` lines `proc` prints, waiting at most `timeout_s` in all (a thread reads,
    so a line already buffered is never waited for)."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in iter(proc.stdout.readline, "")],
                     daemon=True).start()
    out, deadline = [], time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        try:
            out.append(lines.get(timeout=0.5))
        except queue.Empty:
            if proc.poll() is not None and lines.empty():
                break
    return out


def test_ui_opens_on_the_candidates_and_the_lineage_page_reaches_a_candidate(tmp_path, browser):
    cfg = tmp_path / "browser.toml"
    cfg.write_text(small_run_toml("browser", 6, tracking={"enabled": True}))
    run = tmp_path / "run"
    t0 = time.monotonic()
    res = glia("run", str(cfg), "--out", str(run), "--quiet", "--no-report", timeout=300)
    assert res.returncode == 0, res.stderr
    if list((run / "tracking_backlog").glob("*.json")):          # a slow machine's tail
        assert glia("track", str(run), timeout=300).returncode == 0

    from population import Store
    store = Store(run / "state.sqlite", create=False)
    try:
        cands = [c for c in store.all() if c.status == "ok"]
    finally:
        store.close()
    assert len(cands) >= 2
    best = max(cands, key=lambda c: c.fitness)

    # the logged lineage page carries a link per candidate, to its run (the MLflow route)
    logged = next((run / "mlartifacts").rglob("lineage.html")).read_text()
    routes = dict(re.findall(r'<a class="node" data-run="(c\d+)" href="([^"]+)"', logged))
    assert set(routes) == {c.id for c in store_all(run)}, routes
    assert all(re.fullmatch(r"#/experiments/\d+/runs/[0-9a-f]{32}\?workflowType=machine_"
                            r"learning", r) for r in routes.values()), routes

    print(f"run: {time.monotonic() - t0:.1f} s")
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "glia_evo.cli", "ui", str(run), "--port",
                           str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True)
    try:
        lines = read_lines(ui, 2, 180)
        assert len(lines) == 2, (lines, ui.stderr.read() if ui.poll() is not None else "")
        print(f"ui up: {time.monotonic() - t0:.1f} s")
        candidates_url = lines[0].split()[-4]
        lineage_url = lines[1].split()[2]
        assert candidates_url.startswith(f"http://127.0.0.1:{port}/#/experiments/")
        assert lineage_url.startswith("http://127.0.0.1:")

        page = browser.pages[0] if browser.pages else browser.new_page()
        # 1. the printed address: the candidates' runs table, not MLflow's GenAI overview
        page.goto(candidates_url)
        for c in cands:
            page.get_by_role("link", name=c.id, exact=True).first.wait_for(timeout=60_000)
        page.get_by_text(f"{len(store_all(run))} matching runs").wait_for(timeout=30_000)
        _close_assistant(page)
        page.screenshot(path=str(run / "ui_candidates.png"))
        print(f"candidates table: {time.monotonic() - t0:.1f} s")

        # 2. the lineage page: every node is a link; the best's opens its MLflow run page
        page.goto(lineage_url)
        nodes = page.locator("a.node")
        assert nodes.count() == len(store_all(run))
        node = page.locator(f'a.node[data-run="{best.id}"]')
        run_id = re.search(r"/runs/([0-9a-f]{32})", node.get_attribute("href")).group(1)
        node.click()
        page.wait_for_url(re.compile(rf".*#/experiments/\d+/runs/{run_id}.*"), timeout=60_000)
        page.get_by_text(run_id).first.wait_for(timeout=60_000)          # "About this run"
        page.get_by_text(best.id, exact=True).first.wait_for(timeout=30_000)  # its name
        page.get_by_text("fitness", exact=True).first.wait_for(timeout=30_000)
        page.get_by_role("link", name="browser", exact=True).first.wait_for(timeout=30_000)
        _close_assistant(page)
        shot = run / "ui_candidate.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000
        print(f"screenshot: {shot} at {time.monotonic() - t0:.1f} s")
        assert not browser.refused, f"the browser tried to leave loopback: {browser.refused}"
    finally:
        if ui.poll() is None:
            ui.send_signal(signal.SIGTERM)
            try:
                ui.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(ui.pid, signal.SIGKILL)


def store_all(run):
    from population import Store
    store = Store(run / "state.sqlite", create=False)
    try:
        return [c for c in store.all() if c.status != "pending"]
    finally:
        store.close()


def _close_assistant(page) -> None:
    """MLflow 3's assistant panel takes a third of the window; close it if it is there."""
    button = page.get_by_role("button", name="Close", exact=True)
    try:
        if button.count():
            button.first.click(timeout=3_000)
    except Exception:
        pass
